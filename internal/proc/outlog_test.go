package proc

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func logged(l *outputLog, s Stream, off uint64) ([]byte, LogRead) {
	r := l.read(s, off, 1<<30)
	defer r.Release()
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
		l.append(Stdout, Chunk{Data: b})
	}
	l.append(Stderr, Chunk{Data: []byte("err")})
	got, r := logged(l, Stdout, 0)
	if r.Dropped == 0 || r.Offset != r.Dropped || r.End != 300_000 || !bytes.Equal(got, want[r.Dropped:]) {
		t.Fatalf("dropped %d offset %d end %d kept %d", r.Dropped, r.Offset, r.End, len(got))
	}
	if int64(len(got))+3 > 64<<10 || total.Load() > 64<<10 {
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
	a.append(Stdout, Chunk{Data: make([]byte, 80<<10)})
	for range 10 {
		b.append(Stdout, Chunk{Data: make([]byte, 10<<10)})
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

// A pooled chunk that fills half its buffer or more is kept by reference,
// not copied: the log holds one reference until eviction, a reader one until
// it releases. A smaller one is copied, so a buffer never pins much more
// memory than it holds bytes.
func TestOutputLogKeepsPooledChunks(t *testing.T) {
	const half = chunkSize / 2
	var pool sync.Pool
	var total atomic.Int64
	l := newOutputLog(2*chunkSize, &total, 1<<30)
	bufs := make([]*chunkBuf, 3)
	for i := range bufs {
		bufs[i] = &chunkBuf{b: bytes.Repeat([]byte{byte('a' + i)}, chunkSize), pool: &pool}
		bufs[i].refs.Store(1) // the log's
		l.append(Stdout, Chunk{Data: bufs[i].b[:half], buf: bufs[i]})
		if i == 0 {
			r := l.read(Stdout, 0, 1<<30)
			if bufs[0].refs.Load() != 2 || &r.Data[0][0] != &bufs[0].b[0] {
				t.Fatalf("reader got a copy, or no reference (refs %d)", bufs[0].refs.Load())
			}
			defer func() {
				r.Release()
				if bufs[0].refs.Load() != 0 {
					t.Errorf("refs %d after the reader released an evicted chunk", bufs[0].refs.Load())
				}
			}()
		}
	}
	// The third whole buffer took the log over its limit: the first went.
	if bufs[0].refs.Load() != 1 || bufs[1].refs.Load() != 1 || total.Load() != 2*chunkSize {
		t.Fatalf("refs %d %d, total %d", bufs[0].refs.Load(), bufs[1].refs.Load(), total.Load())
	}
	if got, r := logged(l, Stdout, 0); r.Dropped != half || string(got) != strings.Repeat("b", half)+strings.Repeat("c", half) {
		t.Fatalf("dropped %d, kept %q...", r.Dropped, got[:10])
	}
	l.free()
	if bufs[1].refs.Load() != 0 || bufs[2].refs.Load() != 0 || total.Load() != 0 {
		t.Fatalf("after free: refs %d %d, total %d", bufs[1].refs.Load(), bufs[2].refs.Load(), total.Load())
	}
}

func TestOutputLogCopiesSmallPooledChunks(t *testing.T) {
	var pool sync.Pool
	var total atomic.Int64
	l := newOutputLog(1<<30, &total, 1<<30)
	buf := &chunkBuf{b: bytes.Repeat([]byte("x"), chunkSize), pool: &pool}
	c := Chunk{Data: buf.b[:chunkSize/2-1], buf: buf}
	if keepsBuffer(c) {
		t.Fatal("a chunk under half its buffer is kept by reference")
	}
	l.append(Stdout, c)
	r := l.read(Stdout, 0, 1<<30)
	defer r.Release()
	if len(r.held) != 0 || &r.Data[0][0] == &buf.b[0] || len(bytes.Join(r.Data, nil)) != chunkSize/2-1 {
		t.Fatalf("held %d buffers, aliased %v", len(r.held), &r.Data[0][0] == &buf.b[0])
	}
}
