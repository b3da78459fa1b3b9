package proc

import (
	"bytes"
	"sync/atomic"
	"testing"
)

// An exported log imports with the same offsets, kept bytes and drop
// counts; a smaller limit on the importing side evicts further and counts it.
func TestOutputLogExportImport(t *testing.T) {
	var total atomic.Int64
	l := newOutputLog(64<<10, &total, 1<<30)
	for i := range 200 { // segments double up to chunkSize: this evicts some
		l.append(Stdout, Chunk{Data: bytes.Repeat([]byte{byte(i)}, 1000)})
	}
	l.append(Stderr, Chunk{Data: []byte("err")})
	st := l.export()
	wantOut, r := logged(l, Stdout, 0)
	if r.Dropped == 0 || st.Streams[Stdout].Start != r.Offset || st.Streams[Stdout].End != 200_000 || !bytes.Equal(bytes.Join(st.Streams[Stdout].Pieces, nil), wantOut) {
		t.Fatalf("export: stdout [%d, %d) %d bytes; log dropped %d", st.Streams[Stdout].Start, st.Streams[Stdout].End, st.Streams[Stdout].Len(), r.Dropped)
	}

	var total2 atomic.Int64
	m, err := importOutputLog(st, 64<<10, &total2, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []Stream{Stdout, Stderr, PTY} {
		for _, off := range []uint64{0, r.Offset + 7} {
			a, ra := logged(l, s, off)
			b, rb := logged(m, s, off)
			if !bytes.Equal(a, b) || ra.Dropped != rb.Dropped || ra.Offset != rb.Offset || ra.End != rb.End {
				t.Fatalf("stream %d from %d: imported dropped %d offset %d end %d (%d bytes), exported %d %d %d (%d bytes)",
					s, off, rb.Dropped, rb.Offset, rb.End, len(b), ra.Dropped, ra.Offset, ra.End, len(a))
			}
		}
	}
	w1, d1 := l.counts()
	w2, d2 := m.counts()
	if w1 != w2 || d1 != d2 || total2.Load() != m.mem || m.mem == 0 || m.mem > l.mem {
		t.Fatalf("counts %v %d, imported %v %d; memory %d (exporter %d) of total %d", w1, d1, w2, d2, m.mem, l.mem, total2.Load())
	}
	// Appends continue at the carried offsets.
	m.append(Stdout, Chunk{Data: []byte("more")})
	if got, r := logged(m, Stdout, 200_000); string(got) != "more" || r.End != 200_004 {
		t.Fatalf("after import: %q end %d", got, r.End)
	}

	// A smaller limit: older bytes go, the gap says exactly how many.
	var total3 atomic.Int64
	small, err := importOutputLog(st, 4<<10, &total3, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	got, rs := logged(small, Stdout, 0)
	if rs.Offset <= r.Offset || rs.Dropped != rs.Offset || rs.End != 200_000 || !bytes.Equal(got, wantOut[rs.Offset-r.Offset:]) || small.mem > 4<<10 {
		t.Fatalf("smaller limit: dropped %d offset %d end %d, memory %d", rs.Dropped, rs.Offset, rs.End, small.mem)
	}
	if _, d := small.counts(); d != d1+(rs.Offset-r.Offset) {
		t.Fatalf("dropped %d after the import's eviction, want %d", d, d1+(rs.Offset-r.Offset))
	}
	l.free()
	m.free()
	small.free()
	if total.Load() != 0 || total2.Load() != 0 || total3.Load() != 0 {
		t.Fatalf("memory left after free: %d %d %d", total.Load(), total2.Load(), total3.Load())
	}
}

// A state whose bytes do not fill its offsets is refused, holding nothing.
func TestOutputLogImportRefusesInconsistent(t *testing.T) {
	var total atomic.Int64
	for _, s := range []StreamLogState{
		{Start: 0, End: 5, Pieces: [][]byte{[]byte("abc")}},
		{Start: 6, End: 5},
		{Start: 2, End: 3, Dropped: 3, Pieces: [][]byte{[]byte("x")}},
	} {
		st := &LogState{}
		st.Streams[Stderr] = s
		if _, err := importOutputLog(st, 1<<20, &total, 1<<30); err == nil {
			t.Fatalf("%+v imported", s)
		}
	}
	if total.Load() != 0 {
		t.Fatalf("refused imports hold %d bytes", total.Load())
	}
}
