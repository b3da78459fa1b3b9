package proc

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/envd-dev/envd/internal/reaper"
)

// Stream names the output a chunk came from.
type Stream int

const (
	Stdout Stream = iota
	Stderr
	PTY
)

// Chunk sizes: what one read returns at most, as clients expect (§8.1).
const (
	pipeChunk = 32 << 10
	ptyChunk  = 16 << 10
)

// subscriberQueue bounds what a slow subscriber may hold: beyond it the
// readers wait, which back-pressures the process through its full pipe.
const subscriberQueue = 8

// killGrace is how long output may still drain after SendSignal or the
// lifetime timer killed a process, before its pipes are closed regardless (a
// descendant that left the process group could hold them open forever).
const killGrace = time.Second

// Chunk is one read of a process's output. Receivers must not modify Data.
type Chunk struct {
	Stream Stream
	Data   []byte
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

	mu   sync.Mutex
	subs []*subscriber // replaced, never mutated in place, so readers iterate without the lock

	outputs []*os.File // read ends, closed once drained
	readers sync.WaitGroup
	exit    <-chan syscall.WaitStatus
	killed  atomic.Bool
	timer   *time.Timer

	done     chan struct{}
	result   Result
	exitedAt time.Time // guarded by m.mu
}

type subscriber struct {
	ch   chan Chunk
	gone <-chan struct{}
}

// Subscription receives every chunk read after it was made, until the
// process ends or Close is called. Output read while nobody is subscribed is
// discarded: there is no replay buffer.
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
		}
	}
}

func (p *Process) pump(f *os.File, stream Stream, size int) {
	defer p.readers.Done()
	var spare []byte
	for {
		buf := spare
		if buf == nil {
			buf = make([]byte, size)
		}
		n, err := f.Read(buf)
		if n > 0 {
			if subs := p.subscribers(); len(subs) > 0 {
				p.broadcast(subs, Chunk{Stream: stream, Data: buf[:n]})
				spare = nil // now owned by the subscribers
			} else {
				spare = buf // nobody listening: the output is discarded
			}
		}
		if err != nil {
			// io.EOF for pipes, EIO for a pty whose slave side is gone,
			// os.ErrClosed once finish gave up waiting after a kill.
			return
		}
	}
}

// finish runs once per process: it waits for the exit status and the end of
// output, then publishes the result.
func (p *Process) finish() {
	st := <-p.exit
	if p.timer != nil {
		p.timer.Stop()
	}
	drained := make(chan struct{})
	go func() { p.readers.Wait(); close(drained) }()
	if p.killed.Load() {
		select {
		case <-drained:
		case <-time.After(killGrace):
		}
	} else {
		<-drained
	}
	for _, f := range p.outputs {
		f.Close()
	}
	<-drained
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
	p.m.retire(p)
	close(p.done)
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
