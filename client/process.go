package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"

	pb "github.com/envd-dev/envd/internal/gen/process"
)

// Cmd describes a process to start. Cmd is looked up in PATH by envd; Dir
// empty means the default workdir, else the user's home.
type Cmd struct {
	Cmd  string
	Args []string
	Env  map[string]string // on top of envd's defaults, for this process only
	Dir  string
	Tag  string // a name to Connect or Signal by instead of the PID
	// PTY runs the process in a terminal of this size: output arrives as
	// Event.PTY, input is terminal input.
	PTY *Size
	// NoStdin gives the process /dev/null as stdin instead of a pipe.
	NoStdin bool
}

// Size is a terminal size in character cells.
type Size struct{ Cols, Rows uint32 }

// Selector names a running process: PID(n) or Tag(t).
type Selector struct {
	pid uint32
	tag string
}

// PID selects a process by its PID.
func PID(pid uint32) Selector { return Selector{pid: pid} }

// Tag selects the most recently started live process with this tag.
func Tag(tag string) Selector { return Selector{tag: tag} }

func (s Selector) pb() *pb.ProcessSelector {
	if s.tag != "" {
		return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: s.tag}}
	}
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: s.pid}}
}

// Event is one thing a process stream carries: output (exactly one of
// Stdout, Stderr, PTY non-nil) or, last, End.
type Event struct {
	Stdout, Stderr, PTY []byte
	End                 *Exit
}

// Exit is how a process ended.
type Exit struct {
	Code   int    // exit status; -1 when killed by a signal
	Exited bool   // ended by exiting rather than by a signal
	Signal int    // the signal that killed it, when !Exited and envd said which
	Status string // e.g. "exit status 1", "signal: killed"
	Error  string // envd's error text for a non-zero end, if any
}

// ShellCode is the exit code a shell would report: Code, or 128+Signal for a
// process killed by a signal.
func (e *Exit) ShellCode() int {
	if !e.Exited && e.Signal > 0 {
		return 128 + e.Signal
	}
	return e.Code
}

// Result is what Run collected.
type Result struct {
	PID            uint32
	Stdout, Stderr []byte // PTY output goes to Stdout
	Exit
}

// Process is a started or connected process and its event stream. Recv (or
// Wait) must be called from one goroutine; the input and signal methods from
// any.
type Process struct {
	PID uint32
	Tag string

	c      *Client
	op     string
	mu     sync.Mutex
	pty    bool
	recv   func() (*pb.ProcessEvent, bool)
	err    func() error
	close  func() error
	cancel context.CancelFunc
	wd     *watchdog
	done   bool
}

// Start starts cmd and returns once envd reported its PID. The stream lives
// as long as ctx: cancelling ctx detaches from the process without killing it
// (a deadline on ctx, though, is also the process's lifetime limit on envd).
func (c *Client) Start(ctx context.Context, cmd Cmd) (*Process, error) {
	req := &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: cmd.Cmd, Args: cmd.Args, Envs: cmd.Env}}
	if cmd.Dir != "" {
		req.Process.Cwd = &cmd.Dir
	}
	if cmd.Tag != "" {
		req.Tag = &cmd.Tag
	}
	if cmd.PTY != nil {
		req.Pty = &pb.PTY{Size: &pb.PTY_Size{Cols: cmd.PTY.Cols, Rows: cmd.PTY.Rows}}
	}
	if cmd.NoStdin {
		f := false
		req.Stdin = &f
	}
	ctx, cancel := context.WithCancel(ctx)
	st, err := c.proc.Start(ctx, req)
	if err != nil {
		cancel()
		return nil, rpcError("process.Start", err)
	}
	p := &Process{
		Tag: cmd.Tag, c: c, op: "process.Start", pty: cmd.PTY != nil, cancel: cancel,
		recv: func() (*pb.ProcessEvent, bool) {
			if !st.Receive() {
				return nil, false
			}
			return st.Msg().GetEvent(), true
		},
		err: st.Err, close: st.Close,
	}
	return p, p.begin()
}

// Connect attaches to a running (or just-exited, for about 30 s) process:
// its output from now on and its end.
func (c *Client) Connect(ctx context.Context, sel Selector) (*Process, error) {
	ctx, cancel := context.WithCancel(ctx)
	st, err := c.proc.Connect(ctx, &pb.ConnectRequest{Process: sel.pb()})
	if err != nil {
		cancel()
		return nil, rpcError("process.Connect", err)
	}
	p := &Process{
		Tag: sel.tag, c: c, op: "process.Connect", cancel: cancel,
		recv: func() (*pb.ProcessEvent, bool) {
			if !st.Receive() {
				return nil, false
			}
			return st.Msg().GetEvent(), true
		},
		err: st.Err, close: st.Close,
	}
	return p, p.begin()
}

// begin reads the start event.
func (p *Process) begin() error {
	p.wd = newWatchdog(p.c.keepalive, p.cancel)
	for {
		ev, ok := p.recv()
		if !ok {
			err := p.streamErr()
			if err == nil {
				err = &Error{Op: p.op, Kind: ErrInternal, Message: "stream ended before the start event"}
			}
			p.Close()
			return err
		}
		p.wd.reset()
		if s := ev.GetStart(); s != nil {
			p.PID = s.GetPid()
			return nil
		}
		if ev.GetKeepalive() == nil {
			p.Close()
			return &Error{Op: p.op, Kind: ErrInternal, Message: "first event is not the start event"}
		}
	}
}

func (p *Process) streamErr() error {
	if p.wd.fired() {
		return stalled(p.op, p.wd.d)
	}
	return rpcError(p.op, p.err())
}

// Recv returns the next output or end event; after the end event it returns
// io.EOF. A stream that ends without an end event (ctx cancelled, envd gone)
// returns that error.
func (p *Process) Recv() (Event, error) {
	if p.done {
		return Event{}, io.EOF
	}
	for {
		ev, ok := p.recv()
		if !ok {
			p.done = true
			err := p.streamErr()
			p.Close()
			if err == nil {
				err = &Error{Op: p.op, Kind: ErrUnavailable, Message: "stream ended without the end event"}
			}
			return Event{}, err
		}
		p.wd.reset()
		switch {
		case ev.GetData() != nil:
			d := ev.GetData()
			switch o := d.GetOutput().(type) {
			case *pb.ProcessEvent_DataEvent_Stdout:
				return Event{Stdout: nonNil(o.Stdout)}, nil
			case *pb.ProcessEvent_DataEvent_Stderr:
				return Event{Stderr: nonNil(o.Stderr)}, nil
			case *pb.ProcessEvent_DataEvent_Pty:
				p.mu.Lock()
				p.pty = true
				p.mu.Unlock()
				return Event{PTY: nonNil(o.Pty)}, nil
			}
		case ev.GetEnd() != nil:
			e := ev.GetEnd()
			x := &Exit{Code: int(e.GetExitCode()), Exited: e.GetExited(), Status: e.GetStatus(), Error: e.GetError()}
			if !x.Exited {
				x.Signal = signalFromStatus(x.Status)
			}
			p.done = true
			p.Close()
			return Event{End: x}, nil
		}
	}
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Wait copies output to stdout and stderr (nil discards; PTY output goes to
// stdout) until the process ends, and returns how it ended.
func (p *Process) Wait(stdout, stderr io.Writer) (*Exit, error) {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	for {
		ev, err := p.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = &Error{Op: p.op, Kind: ErrFailedPrecondition, Message: "Wait after the end event"}
			}
			return nil, err
		}
		var werr error
		switch {
		case ev.End != nil:
			return ev.End, nil
		case ev.Stdout != nil:
			_, werr = stdout.Write(ev.Stdout)
		case ev.Stderr != nil:
			_, werr = stderr.Write(ev.Stderr)
		case ev.PTY != nil:
			_, werr = stdout.Write(ev.PTY)
		}
		if werr != nil {
			p.Close()
			return nil, werr
		}
	}
}

// Close detaches from the process (it keeps running) and frees the stream.
func (p *Process) Close() error {
	p.wd.stop()
	p.cancel()
	return p.close()
}

func (p *Process) isPTY() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pty
}

// SendInput writes data to the process's stdin, or to its terminal when it
// runs in a PTY (a Connected process counts as one after its first PTY output;
// use Client.SendPTYInput to say so earlier).
func (p *Process) SendInput(ctx context.Context, data []byte) error {
	if p.isPTY() {
		return p.c.SendPTYInput(ctx, PID(p.PID), data)
	}
	return p.c.SendInput(ctx, PID(p.PID), data)
}

// Signal sends sig to the process (envd delivers it to its process group).
func (p *Process) Signal(ctx context.Context, sig Signal) error {
	return p.c.Signal(ctx, PID(p.PID), sig)
}

// Resize sets the size of the process's terminal.
func (p *Process) Resize(ctx context.Context, size Size) error {
	return p.c.Resize(ctx, PID(p.PID), size)
}

// CloseStdin sends EOF on the process's stdin pipe.
func (p *Process) CloseStdin(ctx context.Context) error {
	return p.c.CloseStdin(ctx, PID(p.PID))
}

// Stdin returns a writer whose bytes reach the process's input in order over
// one client stream; Close ends the stream and (not for a PTY) closes stdin.
func (p *Process) Stdin(ctx context.Context) (io.WriteCloser, error) {
	return p.c.stdinWriter(ctx, PID(p.PID), p.isPTY())
}

// Run starts cmd, collects its output and returns how it ended. A non-zero
// exit is not an error: look at Result.Code (or ShellCode).
func (c *Client) Run(ctx context.Context, cmd Cmd) (*Result, error) {
	p, err := c.Start(ctx, cmd)
	if err != nil {
		return nil, err
	}
	var out, errb bytes.Buffer
	x, err := p.Wait(&out, &errb)
	if err != nil {
		return nil, err
	}
	return &Result{PID: p.PID, Stdout: out.Bytes(), Stderr: errb.Bytes(), Exit: *x}, nil
}

// ProcessInfo is a live process as List reports it: its config as started.
type ProcessInfo struct {
	PID  uint32
	Tag  string
	Cmd  string
	Args []string
	Env  map[string]string
	Dir  string
}

// List returns envd's live processes.
func (c *Client) List(ctx context.Context) ([]ProcessInfo, error) {
	res, err := c.proc.List(ctx, &pb.ListRequest{})
	if err != nil {
		return nil, rpcError("process.List", err)
	}
	out := make([]ProcessInfo, 0, len(res.GetProcesses()))
	for _, p := range res.GetProcesses() {
		cfg := p.GetConfig()
		out = append(out, ProcessInfo{PID: p.GetPid(), Tag: p.GetTag(), Cmd: cfg.GetCmd(), Args: cfg.GetArgs(), Env: cfg.GetEnvs(), Dir: cfg.GetCwd()})
	}
	return out, nil
}

// SendInput writes data to a process's stdin pipe.
func (c *Client) SendInput(ctx context.Context, sel Selector, data []byte) error {
	_, err := c.proc.SendInput(ctx, &pb.SendInputRequest{Process: sel.pb(), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: data}}})
	return rpcError("process.SendInput", err)
}

// SendPTYInput writes data to a process's terminal, as typed keys.
func (c *Client) SendPTYInput(ctx context.Context, sel Selector, data []byte) error {
	_, err := c.proc.SendInput(ctx, &pb.SendInputRequest{Process: sel.pb(), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: data}}})
	return rpcError("process.SendInput", err)
}

// CloseStdin sends EOF on a process's stdin pipe (ErrInternal/Unknown for a
// PTY process: send Ctrl-D as input instead).
func (c *Client) CloseStdin(ctx context.Context, sel Selector) error {
	_, err := c.proc.CloseStdin(ctx, &pb.CloseStdinRequest{Process: sel.pb()})
	return rpcError("process.CloseStdin", err)
}

// Signal sends sig to a process.
func (c *Client) Signal(ctx context.Context, sel Selector, sig Signal) error {
	_, err := c.proc.SendSignal(ctx, &pb.SendSignalRequest{Process: sel.pb(), Signal: pb.Signal(sig)})
	return rpcError("process.SendSignal", err)
}

// Resize sets the terminal size of a PTY process.
func (c *Client) Resize(ctx context.Context, sel Selector, size Size) error {
	_, err := c.proc.Update(ctx, &pb.UpdateRequest{Process: sel.pb(), Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: size.Cols, Rows: size.Rows}}})
	return rpcError("process.Update", err)
}

// Stdin returns a writer streaming to a process's stdin (or terminal, pty
// true) in order; see Process.Stdin.
func (c *Client) Stdin(ctx context.Context, sel Selector, pty bool) (io.WriteCloser, error) {
	return c.stdinWriter(ctx, sel, pty)
}

// maxInputChunk bounds one input message, well under connect's default
// message limit.
const maxInputChunk = 64 << 10

type stdinWriter struct {
	c      *Client
	ctx    context.Context
	sel    Selector
	pty    bool
	stream interface {
		Send(*pb.StreamInputRequest) error
		CloseAndReceive() (*pb.StreamInputResponse, error)
	}
	closed bool
}

func (c *Client) stdinWriter(ctx context.Context, sel Selector, pty bool) (io.WriteCloser, error) {
	st, err := c.proc.StreamInput(ctx)
	if err != nil {
		return nil, rpcError("process.StreamInput", err)
	}
	w := &stdinWriter{c: c, ctx: ctx, sel: sel, pty: pty, stream: st}
	start := &pb.StreamInputRequest{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: sel.pb()}}}
	if err := st.Send(start); err != nil {
		return nil, w.fail(err)
	}
	return w, nil
}

// fail returns the server's reason for a broken stream: Send reports only
// io.EOF, CloseAndReceive the error.
func (w *stdinWriter) fail(err error) error {
	if errors.Is(err, io.EOF) {
		w.closed = true
		_, err = w.stream.CloseAndReceive()
		if err == nil {
			err = io.ErrClosedPipe
		}
	}
	return rpcError("process.StreamInput", err)
}

func (w *stdinWriter) Write(b []byte) (int, error) {
	if w.closed {
		return 0, io.ErrClosedPipe
	}
	n := 0
	for len(b) > 0 {
		k := min(len(b), maxInputChunk)
		in := &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: b[:k]}}
		if w.pty {
			in = &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: b[:k]}}
		}
		msg := &pb.StreamInputRequest{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: in}}}
		if err := w.stream.Send(msg); err != nil {
			return n, w.fail(err)
		}
		n += k
		b = b[k:]
	}
	return n, nil
}

func (w *stdinWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if _, err := w.stream.CloseAndReceive(); err != nil {
		return rpcError("process.StreamInput", err)
	}
	if w.pty {
		return nil
	}
	return w.c.CloseStdin(w.ctx, w.sel)
}
