package proc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/cgroup"
	"github.com/envd-dev/envd/internal/reaper"
)

// Stream names the output a chunk came from.
type Stream int

const (
	Stdout Stream = iota
	Stderr
	PTY
)

// chunkSize is the most one chunk carries: a read takes whatever is
// available up to it, so a busy process's output travels in few large
// messages while a quiet one's still goes out at once. (§8.1's 32 KiB/16 KiB
// describe the old envd; clients accept any message size.)
const chunkSize = 256 << 10

// smallChunk: output shorter than this is copied out of the pooled buffer, so
// queued interactive output holds only its own bytes.
const smallChunk = 16 << 10

// pipeSize is what busy pipes are enlarged to, so a writer rarely waits on
// its reader and one read finds plenty.
const pipeSize = 1 << 20

// subscriberQueue bounds what a slow subscriber may hold: beyond it the
// readers wait, which back-pressures the process through its full pipe. With
// the reader's own chunk and the one being sent, at most subscriberQueue+2
// chunks of chunkSize per output are in memory, however many subscribers.
const subscriberQueue = 4

// killGrace is how long output may still drain after SendSignal or the
// lifetime timer killed a process, before its pipes are closed regardless (a
// descendant that left the process group could hold them open forever).
const killGrace = time.Second

// Chunk is one read of a process's output. Receivers must not modify Data.
type Chunk struct {
	Stream Stream
	Data   []byte
	buf    *chunkBuf // shared by every subscriber that got the chunk; nil if not pooled
}

// Release hands the chunk's memory back for reuse once every subscriber is
// done with it. Call it at most once, after the last use of Data; a chunk
// never released is simply garbage collected.
func (c Chunk) Release() {
	if c.buf != nil {
		c.buf.release()
	}
}

type chunkBuf struct {
	b    []byte
	refs atomic.Int32
	pool *sync.Pool
}

func (b *chunkBuf) release() {
	if b.refs.Add(-1) == 0 {
		b.pool.Put(b)
	}
}

// Config is the process configuration exactly as the client sent it; List
// reports it back unchanged.
type Config struct {
	Cmd  string
	Args []string
	Envs map[string]string
	Cwd  *string
}

// Process is one started child. Its entry stays in the table for the
// retention period after it ended, so late readers still get its Result.
type Process struct {
	m      *Manager
	pid    int
	tag    string
	hasTag bool
	config Config
	seq    uint64
	isPTY  bool

	inMu  sync.Mutex
	stdin *os.File // pipe write end, or the pty master; nil once closed or disabled
	tty   *os.File // pty master, for resizing; nil for pipes

	stdinWritten int // guarded by inMu; counted up to growAfter only

	mu   sync.Mutex
	subs []*subscriber // replaced, never mutated in place, so readers iterate without the lock

	outputs []*os.File // read ends, closed once drained
	readers sync.WaitGroup
	exit    <-chan syscall.WaitStatus
	killed  atomic.Bool
	timer   *time.Timer
	// deadline is the lifetime Start set (zero: none), carried across a live upgrade.
	deadline time.Time

	log       *outputLog       // nil when the Manager keeps no logs
	written   [3]atomic.Uint64 // per stream, counted when there is no log
	cg        *cgroup.Command  // the command's own group; nil without cgroups
	startedAt time.Time

	done       chan struct{}
	result     Result
	exitReport ExitReport
	exitedAt   time.Time // guarded by m.mu
}

type subscriber struct {
	ch   chan Chunk
	gone <-chan struct{}
}

// Subscription receives every chunk read after it was made, until the
// process ends or Close is called. Output read while nobody is subscribed
// reaches only the output log (ReadOutput).
type Subscription struct {
	C      <-chan Chunk
	p      *Process
	s      *subscriber
	cancel context.CancelFunc
}

// Close detaches the subscription; a reader blocked on it moves on at once.
func (s *Subscription) Close() {
	s.cancel()
	s.p.unsubscribe(s.s)
}

func (p *Process) Pid() int { return p.pid }

// Done is closed once the process was reaped and all its output delivered.
func (p *Process) Done() <-chan struct{} { return p.done }

// Result is valid after Done is closed.
func (p *Process) Result() Result {
	<-p.done
	return p.result
}

func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Subscribe attaches to the output until ctx ends or the subscription closes.
func (p *Process) Subscribe(ctx context.Context) *Subscription {
	ctx, cancel := context.WithCancel(ctx)
	s := &subscriber{ch: make(chan Chunk, subscriberQueue), gone: ctx.Done()}
	p.mu.Lock()
	p.subs = append(slices.Clip(p.subs), s)
	p.mu.Unlock()
	return &Subscription{C: s.ch, p: p, s: s, cancel: cancel}
}

func (p *Process) unsubscribe(s *subscriber) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := slices.Index(p.subs, s); i >= 0 {
		p.subs = slices.Delete(slices.Clone(p.subs), i, i+1)
	}
}

func (p *Process) subscribers() []*subscriber {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.subs
}

// broadcast hands c to every subscriber, waiting for slow ones (lossless
// back-pressure) but dropping any whose context ended, so a vanished client
// never blocks the process.
func (p *Process) broadcast(subs []*subscriber, c Chunk) {
	for _, s := range subs {
		select {
		case s.ch <- c:
		case <-s.gone:
			p.unsubscribe(s)
			c.Release()
		}
	}
}

func (p *Process) pump(f *os.File, stream Stream) {
	defer p.readers.Done()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	total := 0
	if stream == PTY {
		total = growAfter // a pty's buffer cannot be resized
	}
	for {
		c, err := p.read(rc, stream)
		if total < growAfter {
			if total += len(c.Data); total >= growAfter {
				setPipeSize(f)
			}
		}
		if len(c.Data) > 0 {
			// One reference per subscriber and one for the log, which
			// keeps a pooled chunk as it is instead of copying it.
			subs := p.subscribers()
			refs := len(subs)
			if p.log != nil && keepsBuffer(c) {
				refs++
			}
			if c.buf != nil {
				if refs == 0 {
					c.buf.pool.Put(c.buf) // nobody listening and no log
				} else {
					c.buf.refs.Store(int32(refs))
				}
			}
			if p.log != nil {
				p.log.append(stream, c)
			} else {
				p.written[stream].Add(uint64(len(c.Data)))
			}
			if len(subs) > 0 {
				p.broadcast(subs, c)
			}
		}
		if err != nil {
			// io.EOF for pipes, EIO for a pty whose slave side is gone,
			// os.ErrClosed once finish gave up waiting after a kill.
			return
		}
	}
}

// read waits for output, then takes all that is there up to chunkSize: the
// first read returns as soon as anything is available (no added latency), and
// further non-blocking reads gather what a pty hands out in small pieces. A
// buffer is taken from the pool only once the descriptor is readable, so an
// idle process holds none.
func (p *Process) read(rc syscall.RawConn, stream Stream) (Chunk, error) {
	var (
		buf  *chunkBuf
		n    int
		rerr error
	)
	err := rc.Read(func(fd uintptr) bool {
		if buf == nil {
			buf = p.m.chunks.Get().(*chunkBuf)
		}
		for n < len(buf.b) {
			m, err := unix.Read(int(fd), buf.b[n:])
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				if n == 0 {
					p.m.chunks.Put(buf)
					buf = nil
					return false // wait for readiness, holding no buffer
				}
				return true
			case err != nil:
				rerr = err
				return true
			case m == 0:
				rerr = io.EOF
				return true
			}
			n += m
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if buf == nil {
		return Chunk{}, err
	}
	if n < smallChunk {
		c := Chunk{Stream: stream, Data: bytes.Clone(buf.b[:n])}
		p.m.chunks.Put(buf)
		return c, err
	}
	return Chunk{Stream: stream, Data: buf.b[:n], buf: buf}, err
}

// finish runs once per process: it waits for the exit status and the end of
// output, then publishes the result.
func (p *Process) finish() {
	st := <-p.exit
	ended := p.m.now()
	if p.timer != nil {
		p.timer.Stop()
	}
	// Waiting here, not in a goroutine of its own, saves a wakeup between
	// the last reader's EOF and the end event. After a kill, closing the
	// read ends makes readers held by escaped descendants give up.
	var grace *time.Timer
	if p.killed.Load() {
		grace = time.AfterFunc(killGrace, p.closeOutputs)
	}
	p.readers.Wait()
	if grace != nil {
		grace.Stop()
	}
	p.closeOutputs()
	p.inMu.Lock()
	if p.stdin != nil && p.stdin != p.tty {
		p.stdin.Close()
	}
	if p.tty != nil {
		p.tty.Close()
	}
	p.stdin = nil
	p.tty = nil
	p.inMu.Unlock()
	p.result = resultOf(st)
	var usage cgroup.Usage
	if p.cg != nil {
		usage = p.cg.Usage()
		if err := p.cg.Remove(); err != nil {
			p.m.log.Warn("remove command cgroup", "pid", p.pid, "err", err)
		}
	}
	p.exitReport = p.report(st, ended, usage, p.cg != nil)
	p.m.retire(p)
	close(p.done)
}

// closeOutputs may run twice (grace timer, then finish): os.File.Close of a
// closed file only reports os.ErrClosed.
func (p *Process) closeOutputs() {
	for _, f := range p.outputs {
		f.Close()
	}
}

// Signal sends sig to the whole process group, so children and grandchildren
// get it too, and stops waiting for output held open by escaped descendants.
func (p *Process) Signal(sig syscall.Signal) error {
	p.killed.Store(true)
	err := p.m.reaper.KillGroup(p.pid, sig)
	if errors.Is(err, reaper.ErrGone) {
		return p.notFound()
	}
	if err != nil {
		return errorf(ErrInternal, "error sending signal: %v", err)
	}
	return nil
}

func (p *Process) notFound() error {
	return errorf(ErrNotFound, "process with pid %d not found", p.pid)
}

// WriteStdin writes to the stdin pipe; order is kept between callers. A
// process that does not read blocks the write until ctx ends.
func (p *Process) WriteStdin(ctx context.Context, b []byte) error {
	if p.isPTY {
		return errorf(ErrPrecondition, "error writing to stdin: process has a pty, send pty input instead")
	}
	return p.write(ctx, b, "stdin", "error writing to stdin: stdin not enabled or closed")
}

// WritePTY writes to the terminal, as if typed.
func (p *Process) WritePTY(ctx context.Context, b []byte) error {
	if !p.isPTY {
		return errorf(ErrPrecondition, "error writing to pty: tty not assigned to process")
	}
	return p.write(ctx, b, "pty", "error writing to pty: process exited")
}

func (p *Process) write(ctx context.Context, b []byte, what, closedMsg string) error {
	p.inMu.Lock()
	defer p.inMu.Unlock()
	f := p.stdin
	if f == nil {
		return errorf(ErrPrecondition, "%s", closedMsg)
	}
	if !p.isPTY && p.stdinWritten < growAfter {
		// A busy stdin gets a big pipe, so the client's writes land at once
		// while the process catches up.
		if p.stdinWritten += len(b); p.stdinWritten >= growAfter {
			setPipeSize(f)
		}
	}
	// The descriptor is non-blocking, so a deadline interrupts a write the
	// process never drains once the caller gives up.
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Now()) })
	_, err := f.Write(b)
	if !stop() {
		_ = f.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		if ctx.Err() != nil {
			return errorf(ErrCanceled, "error writing to %s: %v", what, ctx.Err())
		}
		return errorf(ErrInternal, "error writing to %s: %v", what, err)
	}
	return nil
}

// CloseStdin delivers EOF on the stdin pipe. Closing twice, or closing a
// disabled stdin, is fine.
func (p *Process) CloseStdin() error {
	if p.isPTY {
		return errorf(ErrPrecondition, "error closing stdin: cannot close stdin for PTY process — send Ctrl+D (0x04) instead")
	}
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if p.stdin != nil {
		err := p.stdin.Close()
		p.stdin = nil
		if err != nil && !errors.Is(err, os.ErrClosed) {
			return errorf(ErrInternal, "error closing stdin: %v", err)
		}
	}
	return nil
}

// Resize sets the terminal's window size; the child gets SIGWINCH.
func (p *Process) Resize(size Size) error {
	if !p.isPTY {
		return errorf(ErrPrecondition, "error resizing tty: tty not assigned to process")
	}
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if p.tty == nil {
		return p.notFound()
	}
	if err := control(p.tty, func(fd int) error { return setSize(fd, size) }); err != nil {
		return errorf(ErrInternal, "error resizing tty: %v", err)
	}
	return nil
}
