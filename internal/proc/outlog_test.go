package proc

import (
	"bytes"
	"sync/atomic"
	"testing"
)

func logged(l *outputLog, s Stream, off uint64) ([]byte, LogRead) {
	r := l.read(s, off, 1<<30)
	return bytes.Join(r.Data, nil), r
}

// Offsets count every byte per stream from the first; eviction drops whole
// segments from the stream holding most and says exactly how much.
func TestOutputLogOffsetsAndEviction(t *testing.T) {
	var total atomic.Int64
	l := newOutputLog(64<<10, &total, 1<<30)
	var want []byte
	for i := range 300 {
		b := bytes.Repeat([]byte{byte(i)}, 1000)
		want = append(want, b...)
		l.append(Stdout, b)
	}
	l.append(Stderr, []byte("err"))
	got, r := logged(l, Stdout, 0)
	if r.Dropped == 0 || r.Offset != r.Dropped || r.End != 300_000 || !bytes.Equal(got, want[r.Dropped:]) {
		t.Fatalf("dropped %d offset %d end %d kept %d", r.Dropped, r.Offset, r.End, len(got))
	}
	if int64(len(got))+3 > 64<<10 || total.Load() != int64(len(got))+3 {
		t.Fatalf("kept %d + 3 bytes, total %d, limit %d", len(got), total.Load(), 64<<10)
	}
	if got, _ := logged(l, Stderr, 0); string(got) != "err" {
		t.Fatalf("stderr %q: the small stream must not be evicted for the big one", got)
	}
	// Reading from inside the kept range: no gap.
	mid := r.Offset + 10
	if got, r2 := logged(l, Stdout, mid); r2.Dropped != 0 || !bytes.Equal(got, want[mid:]) {
		t.Fatalf("read from %d: dropped %d", mid, r2.Dropped)
	}
	w, dropped := l.counts()
	if w[Stdout] != 300_000 || w[Stderr] != 3 || dropped != r.Dropped {
		t.Fatalf("counts %v %d", w, dropped)
	}
	l.free()
	if total.Load() != 0 {
		t.Fatalf("total %d after free", total.Load())
	}
}

// Over the total cap the writer evicts its own output, never another's.
func TestOutputLogTotalCap(t *testing.T) {
	var total atomic.Int64
	a := newOutputLog(1<<30, &total, 100<<10)
	b := newOutputLog(1<<30, &total, 100<<10)
	a.append(Stdout, make([]byte, 80<<10))
	for range 10 {
		b.append(Stdout, make([]byte, 10<<10))
	}
	if _, r := logged(a, Stdout, 0); r.Dropped != 0 {
		t.Fatalf("a lost %d bytes to b's writes", r.Dropped)
	}
	if total.Load() > 100<<10 {
		t.Fatalf("total %d over the cap", total.Load())
	}
	if _, r := logged(b, Stdout, 0); r.Dropped == 0 {
		t.Fatal("b kept everything over the cap")
	}
}
