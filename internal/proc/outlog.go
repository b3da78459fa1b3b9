package proc

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
)

// DefaultLogLimit is how much output envd keeps per process (all its streams
// together); DefaultLogTotal bounds the logs of all processes.
const (
	DefaultLogLimit = 16 << 20
	DefaultLogTotal = 64 << 20
)

// The log's own segments start small, so a process that prints a line holds
// well under a KiB, and double up to chunkSize for busy ones. Eviction drops
// whole segments.
const minSegment = 512

// outputLog keeps the output of one process, per stream, with the offset of
// every byte counted from the first. A chunk filling most of a pooled buffer
// is kept as it is (one more reference to the buffer, no copy); smaller ones
// are copied into segments of the log's own. No kept byte is ever written again, so readers
// get subslices without copying (holding a reference on pooled buffers).
type outputLog struct {
	limit int64
	total *atomic.Int64 // the Manager's sum over all logs
	cap   int64         // the Manager's bound on total

	mu      sync.Mutex
	streams [3]streamLog
	mem     int64         // memory held, all streams: a pooled buffer counts whole
	dropped uint64        // bytes evicted, all streams
	changed chan struct{} // closed and replaced at each append
}

type streamLog struct {
	start   uint64 // offset of the first kept byte
	end     uint64 // bytes written
	segs    []segment
	dropped uint64
}

type segment struct {
	data []byte
	buf  *chunkBuf // the pooled buffer holding data; nil for the log's own
}

// keepsBuffer says whether the log keeps c's pooled buffer rather than a
// copy: only when c fills at least half of it, so memory held stays within
// twice the bytes kept while full-speed output is never copied.
func keepsBuffer(c Chunk) bool { return c.buf != nil && len(c.Data) >= chunkSize/2 }

func (s segment) cost() int64 {
	if s.buf != nil {
		return int64(cap(s.buf.b))
	}
	return int64(cap(s.data))
}

func newOutputLog(limit int64, total *atomic.Int64, cap int64) *outputLog {
	return &outputLog{limit: limit, total: total, cap: cap, changed: make(chan struct{})}
}

// append adds c to the end of stream s; when keepsBuffer(c), c must already
// count the log's reference. Then it evicts the oldest segments while the process is
// over its limit or all logs are over theirs (the writer pays: a process
// never evicts another's output).
func (l *outputLog) append(s Stream, c Chunk) {
	l.mu.Lock()
	st := &l.streams[s]
	st.end += uint64(len(c.Data))
	if keepsBuffer(c) {
		seg := segment{data: c.Data, buf: c.buf}
		st.segs = append(st.segs, seg)
		l.grow(seg.cost())
	} else {
		l.copyLocked(st, c.Data)
	}
	for l.mem > l.limit || (l.total.Load() > l.cap && l.mem > 0) {
		l.evictLocked()
	}
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *outputLog) grow(n int64) {
	l.mem += n
	l.total.Add(n)
}

// copyLocked appends b to the stream's own tail segment, starting a new one,
// twice the size of the last, when it is full.
func (l *outputLog) copyLocked(st *streamLog, b []byte) {
	for len(b) > 0 {
		n := len(st.segs)
		if n == 0 || st.segs[n-1].buf != nil || len(st.segs[n-1].data) == cap(st.segs[n-1].data) {
			size := minSegment
			if n > 0 && st.segs[n-1].buf == nil {
				size = min(2*cap(st.segs[n-1].data), chunkSize)
			}
			size = max(size, min(len(b), chunkSize))
			st.segs = append(st.segs, segment{data: make([]byte, 0, size)})
			l.grow(int64(size))
			n++
		}
		tail := st.segs[n-1].data
		k := min(len(b), cap(tail)-len(tail))
		st.segs[n-1].data = append(tail, b[:k]...)
		b = b[k:]
	}
}

// evictLocked drops the oldest segment of the stream holding the most.
func (l *outputLog) evictLocked() {
	var big *streamLog
	var bigSize uint64
	for i := range l.streams {
		st := &l.streams[i]
		if kept := st.end - st.start; len(st.segs) > 0 && kept >= bigSize {
			big, bigSize = st, kept
		}
	}
	if big == nil {
		return
	}
	seg := big.segs[0]
	big.segs[0] = segment{}
	big.segs = big.segs[1:]
	n := uint64(len(seg.data))
	big.start += n
	big.dropped += n
	l.dropped += n
	l.grow(-seg.cost())
	if seg.buf != nil {
		seg.buf.release()
	}
}

// free releases everything, once the exit report expired.
func (l *outputLog) free() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.streams {
		st := &l.streams[i]
		for _, seg := range st.segs {
			if seg.buf != nil {
				seg.buf.release()
			}
		}
		st.segs = nil
		st.start = st.end
	}
	l.grow(-l.mem)
}

// LogRead is one answer from the log: Dropped bytes before Offset are gone
// (evicted), then Data follows from Offset. Changed is closed when more is
// written. Release must be called once Data is no longer used.
type LogRead struct {
	Dropped uint64
	Offset  uint64
	Data    [][]byte
	End     uint64 // bytes written so far
	Changed <-chan struct{}
	held    []*chunkBuf
}

// Release hands back the pooled buffers Data points into.
func (r *LogRead) Release() {
	for _, b := range r.held {
		b.release()
	}
	r.held = nil
}

// read returns what the log holds of s from offset, up to maxBytes.
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
		segEnd := pos + uint64(len(seg.data))
		if segEnd > r.Offset {
			from := int(max(r.Offset, pos) - pos)
			part := seg.data[from:min(len(seg.data), from+maxBytes)]
			r.Data = append(r.Data, part)
			maxBytes -= len(part)
			if seg.buf != nil {
				// The log's own reference keeps the count above zero
				// while it is held under l.mu.
				seg.buf.refs.Add(1)
				r.held = append(r.held, seg.buf)
			}
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

// LogState is an output log as it crosses a live upgrade (§18.1): per
// stream, the kept bytes with their offsets, so that the next image answers
// reads with the same offsets and gaps.
type LogState struct {
	Streams [3]StreamLogState // by Stream
	Dropped uint64            // evicted, all streams
}

// StreamLogState is one stream of a LogState: Pieces hold [Start, End) in
// order, each at most a chunk long, so each can become a segment of its own.
type StreamLogState struct {
	Start, End, Dropped uint64
	Pieces              [][]byte
}

// Len is the number of bytes in Pieces.
func (s StreamLogState) Len() uint64 {
	n := 0
	for _, p := range s.Pieces {
		n += len(p)
	}
	return uint64(n)
}

// export copies what the log holds.
func (l *outputLog) export() *LogState {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &LogState{Dropped: l.dropped}
	for i := range l.streams {
		s := &l.streams[i]
		pieces := make([][]byte, 0, len(s.segs))
		for _, seg := range s.segs {
			pieces = append(pieces, bytes.Clone(seg.data))
		}
		st.Streams[i] = StreamLogState{Start: s.start, End: s.end, Dropped: s.dropped, Pieces: pieces}
	}
	return st
}

// importOutputLog rebuilds an exported log, taking over st's bytes, which
// nothing may modify afterwards. A state whose data does not
// match its offsets is refused; one larger than this envd's limits is
// evicted down to them, and the eviction is counted as drops as usual.
func importOutputLog(st *LogState, limit int64, total *atomic.Int64, cap int64) (*outputLog, error) {
	for i, s := range st.Streams {
		if s.Start > s.End || s.Len() != s.End-s.Start || s.Dropped > s.Start {
			return nil, fmt.Errorf("output log stream %d: %d bytes for [%d, %d) with %d dropped", i, s.Len(), s.Start, s.End, s.Dropped)
		}
	}
	l := newOutputLog(limit, total, cap)
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, s := range st.Streams {
		ls := &l.streams[i]
		ls.start, ls.end, ls.dropped = s.Start, s.End, s.Dropped
		// Each piece becomes a segment as it is (never appended to): no
		// copy, and no more memory than the exporting log held, so no limit
		// it kept within evicts here. An oversized piece (another writer's)
		// is split; its parts then share one array.
		for _, b := range s.Pieces {
			for len(b) > 0 {
				n := min(len(b), chunkSize)
				seg := segment{data: b[:n:n]}
				ls.segs = append(ls.segs, seg)
				l.grow(seg.cost())
				b = b[n:]
			}
		}
	}
	l.dropped = st.Dropped
	for l.mem > l.limit || (l.total.Load() > l.cap && l.mem > 0) {
		l.evictLocked()
	}
	return l, nil
}
