package proc

import (
	"sync"
	"sync/atomic"
)

// DefaultLogLimit is how much output envd keeps per process (all its streams
// together); DefaultLogTotal bounds the logs of all processes.
const (
	DefaultLogLimit = 16 << 20
	DefaultLogTotal = 64 << 20
)

// Segments start small, so a process that prints a line holds a few KiB, and
// double up to chunkSize for busy ones. Eviction drops whole segments.
const minSegment = 4 << 10

// outputLog keeps the output of one process, per stream, with the offset of
// every byte counted from the first. Segments are never written once a
// reader may see them, so readers get subslices without copying.
type outputLog struct {
	limit int64
	total *atomic.Int64 // the Manager's sum over all logs
	cap   int64         // the Manager's bound on total

	mu      sync.Mutex
	streams [3]streamLog
	size    int64         // bytes kept, all streams
	dropped uint64        // bytes evicted, all streams
	changed chan struct{} // closed and replaced at each append
}

type streamLog struct {
	start   uint64 // offset of the first kept byte
	end     uint64 // bytes written
	segs    [][]byte
	dropped uint64
}

func newOutputLog(limit int64, total *atomic.Int64, cap int64) *outputLog {
	return &outputLog{limit: limit, total: total, cap: cap, changed: make(chan struct{})}
}

// append copies b to the end of stream s, then evicts the oldest segments
// while the process is over its limit or all logs are over theirs (the
// writer pays: a process never evicts another's output).
func (l *outputLog) append(s Stream, b []byte) {
	l.mu.Lock()
	st := &l.streams[s]
	st.end += uint64(len(b))
	for len(b) > 0 {
		n := len(st.segs)
		if n == 0 || len(st.segs[n-1]) == cap(st.segs[n-1]) {
			size := minSegment
			if n > 0 {
				size = min(2*cap(st.segs[n-1]), chunkSize)
			}
			st.segs = append(st.segs, make([]byte, 0, max(size, min(len(b), chunkSize))))
			n++
		}
		tail := st.segs[n-1]
		k := min(len(b), cap(tail)-len(tail))
		st.segs[n-1] = append(tail, b[:k]...)
		b = b[k:]
		l.size += int64(k)
		l.total.Add(int64(k))
	}
	for l.size > l.limit || (l.total.Load() > l.cap && l.size > 0) {
		l.evictLocked()
	}
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// evictLocked drops the oldest segment of the stream holding the most.
func (l *outputLog) evictLocked() {
	var big *streamLog
	var bigSize uint64
	for i := range l.streams {
		st := &l.streams[i]
		if kept := st.end - st.start; len(st.segs) > 0 && kept > bigSize {
			big, bigSize = st, kept
		}
	}
	if big == nil {
		return
	}
	n := len(big.segs[0])
	big.segs[0] = nil
	big.segs = big.segs[1:]
	big.start += uint64(n)
	big.dropped += uint64(n)
	l.dropped += uint64(n)
	l.size -= int64(n)
	l.total.Add(-int64(n))
}

// free releases everything, once the exit report expired.
func (l *outputLog) free() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.streams {
		l.streams[i].segs = nil
		l.streams[i].start = l.streams[i].end
	}
	l.total.Add(-l.size)
	l.size = 0
}

// LogRead is one answer from the log: Dropped bytes before Offset are gone
// (evicted), then Data follows from Offset. Changed is closed when more is
// written.
type LogRead struct {
	Dropped uint64
	Offset  uint64
	Data    [][]byte
	End     uint64 // bytes written so far
	Changed <-chan struct{}
}

// read returns what the log holds of s from offset, up to max bytes.
func (l *outputLog) read(s Stream, offset uint64, maxBytes int) LogRead {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &l.streams[s]
	r := LogRead{Offset: offset, End: st.end, Changed: l.changed}
	if offset < st.start {
		r.Dropped, r.Offset = st.start-offset, st.start
	}
	pos := st.start
	for _, seg := range st.segs {
		if maxBytes <= 0 {
			break
		}
		segEnd := pos + uint64(len(seg))
		if segEnd > r.Offset {
			from := int(max(r.Offset, pos) - pos)
			part := seg[from:min(len(seg), from+maxBytes)]
			r.Data = append(r.Data, part)
			maxBytes -= len(part)
		}
		pos = segEnd
	}
	return r
}

// counts returns the bytes written per stream and evicted in all.
func (l *outputLog) counts() (written [3]uint64, dropped uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.streams {
		written[i] = l.streams[i].end
	}
	return written, l.dropped
}

// ReadOutput returns what the log holds of stream s from offset, at most
// maxBytes of it. An offset beyond what was written is out of range.
func (p *Process) ReadOutput(s Stream, offset uint64, maxBytes int) (LogRead, error) {
	if p.log == nil {
		return LogRead{}, errorf(ErrPrecondition, "output log is disabled")
	}
	switch {
	case p.isPTY && s != PTY:
		return LogRead{}, errorf(ErrInvalid, "process %d has a pty: read its pty stream", p.pid)
	case !p.isPTY && s == PTY:
		return LogRead{}, errorf(ErrInvalid, "process %d has no pty: read stdout or stderr", p.pid)
	}
	r := p.log.read(s, offset, maxBytes)
	if offset > r.End {
		return LogRead{}, errorf(ErrOutOfRange, "offset %d is beyond the %d bytes written", offset, r.End)
	}
	return r, nil
}
