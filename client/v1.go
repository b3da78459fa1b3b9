package client

import (
	"context"
	"errors"
	"io"
	"time"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
)

// This file wraps the envd.v1 services, which only this envd offers (E2B's
// answers ErrUnimplemented or ErrNotFound): the output log, exit reports
// and port events.

func (s Selector) ref() *pb.ProcessRef {
	if s.tag != "" {
		return &pb.ProcessRef{Selector: &pb.ProcessRef_Tag{Tag: s.tag}}
	}
	return &pb.ProcessRef{Selector: &pb.ProcessRef_Pid{Pid: s.pid}}
}

// OutputStream picks one of a process's outputs in its log.
type OutputStream int

const (
	Stdout OutputStream = 1
	Stderr OutputStream = 2
	PTY    OutputStream = 3 // the terminal of a PTY process
)

// ReadOptions say what ReadOutput reads.
type ReadOptions struct {
	Stream OutputStream // default Stdout
	Offset uint64       // the byte of the stream to start at
	// Follow keeps the read open for output still to come, until the
	// process ends; without it the read ends at what is logged now.
	Follow bool
}

// LogEvent is one thing an output read carries: exactly one of Data (the
// bytes at Offset), Gap, or, last, Exit.
type LogEvent struct {
	Offset uint64
	Data   []byte
	Gap    *Gap
	Exit   *ExitReport
}

// Gap is a range of output envd no longer has: the bytes [Offset,
// Offset+Dropped) were evicted from the log before they were read. The next
// data is at Offset+Dropped.
type Gap struct {
	Offset, Dropped uint64
}

// ExitReport is how a process ended, as envd's exit reports tell it.
type ExitReport struct {
	PID    uint32
	Tag    string
	HasTag bool   // the process had a tag (Tag may be empty and still set)
	Code   int    // exit status; -1 when killed by a signal
	Signal string // e.g. "SIGKILL"; empty when it exited
	// CoreDumped and OOMKilled are what the kernel said.
	CoreDumped, OOMKilled bool
	// Nil when the kernel could not tell (then named in Unavailable).
	PeakMemoryBytes    *uint64
	CPUUser, CPUSystem *time.Duration
	StartedAt, EndedAt time.Time
	Wall               time.Duration
	StdoutBytes        uint64
	StderrBytes        uint64
	PTYBytes           uint64
	DroppedBytes       uint64   // output evicted from the log, all streams
	Unavailable        []string // wire names of fields this kernel could not give
}

// ShellCode is the exit code a shell would report: Code, or 128+N for a
// process killed by signal N.
func (r *ExitReport) ShellCode() int {
	if n := signalNumber(r.Signal); r.Signal != "" && n > 0 {
		return 128 + n
	}
	return r.Code
}

func exitReport(r *pb.ExitReport) *ExitReport {
	out := &ExitReport{
		PID: r.GetPid(), Tag: r.GetTag(), HasTag: r.GetHasTag(),
		Code: int(r.GetExitCode()), Signal: r.GetSignal(),
		CoreDumped: r.GetCoreDumped(), OOMKilled: r.GetOomKilled(),
		StartedAt:   time.UnixMilli(r.GetStartedAtUnixMs()),
		EndedAt:     time.UnixMilli(r.GetEndedAtUnixMs()),
		Wall:        time.Duration(r.GetWallUsec()) * time.Microsecond,
		StdoutBytes: r.GetStdoutBytes(), StderrBytes: r.GetStderrBytes(), PTYBytes: r.GetPtyBytes(),
		DroppedBytes: r.GetDroppedBytes(), Unavailable: r.GetUnavailable(),
	}
	if r.PeakMemoryBytes != nil {
		v := r.GetPeakMemoryBytes()
		out.PeakMemoryBytes = &v
	}
	if r.CpuUserUsec != nil {
		v := time.Duration(r.GetCpuUserUsec()) * time.Microsecond
		out.CPUUser = &v
	}
	if r.CpuSystemUsec != nil {
		v := time.Duration(r.GetCpuSystemUsec()) * time.Microsecond
		out.CPUSystem = &v
	}
	return out
}

// OutputReader is one read of a process's output log. Recv must be called
// from one goroutine.
type OutputReader struct {
	st      *connect.ServerStreamForClient[pb.ReadResponse]
	cancel  context.CancelFunc
	wd      *watchdog
	pending bool // the first message, received by ReadOutput, is not returned yet
	done    bool
}

// ReadOutput reads the log envd keeps of a process's output (running, or
// ended within its exit report's retention), whether or not anyone was
// attached when it was written. Evicted ranges arrive as Gap events, never
// silently skipped; the exit report comes last once the read reaches the end
// of a process that has ended.
func (c *Client) ReadOutput(ctx context.Context, sel Selector, o ReadOptions) (*OutputReader, error) {
	const op = "output.Read"
	stream := o.Stream
	if stream == 0 {
		stream = Stdout
	}
	ctx, cancel := context.WithCancel(ctx)
	st, err := c.output.Read(ctx, &pb.ReadRequest{Process: sel.ref(), Stream: pb.OutputStream(stream), Offset: o.Offset, Follow: o.Follow})
	if err != nil {
		cancel()
		return nil, rpcError(op, err)
	}
	r := &OutputReader{st: st, cancel: cancel, wd: newWatchdog(c.keepalive, cancel)}
	// envd answers with the first message (a follow with nothing logged yet
	// sends a keepalive): receiving it makes a bad selector or stream this
	// call's error, not the first Recv's.
	if r.pending = st.Receive(); !r.pending {
		if _, err := r.Recv(); !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return r, nil
}

// Recv returns the next chunk, gap or exit report; io.EOF once the read is
// over (after the exit report, or, without Follow, at the end of what is
// logged). A read that breaks off returns that error.
func (r *OutputReader) Recv() (LogEvent, error) {
	const op = "output.Read"
	if r.done {
		return LogEvent{}, io.EOF
	}
	for r.pending || r.st.Receive() {
		r.pending = false
		r.wd.reset()
		switch ev := r.st.Msg().GetEvent().(type) {
		case *pb.ReadResponse_Chunk:
			return LogEvent{Offset: ev.Chunk.GetOffset(), Data: nonNil(ev.Chunk.GetData())}, nil
		case *pb.ReadResponse_Gap:
			g := &Gap{Offset: ev.Gap.GetOffset(), Dropped: ev.Gap.GetDropped()}
			return LogEvent{Offset: g.Offset, Gap: g}, nil
		case *pb.ReadResponse_Exit:
			return LogEvent{Exit: exitReport(ev.Exit)}, nil
		}
	}
	r.done = true
	fired := r.wd.fired()
	err := r.st.Err()
	r.Close()
	switch {
	case fired:
		return LogEvent{}, stalled(op, r.wd.d)
	case err != nil:
		return LogEvent{}, rpcError(op, err)
	}
	return LogEvent{}, io.EOF
}

// Close ends the read.
func (r *OutputReader) Close() error {
	r.wd.stop()
	r.cancel()
	return r.st.Close()
}

// WaitExit returns the exit report of a process once it has ended (at once
// if it already has). ctx's deadline bounds only the wait: at it the error
// is ErrDeadlineExceeded and the process keeps running.
func (c *Client) WaitExit(ctx context.Context, sel Selector) (*ExitReport, error) {
	res, err := c.exits.Wait(ctx, &pb.WaitRequest{Process: sel.ref()})
	if err != nil {
		return nil, rpcError("exits.Wait", err)
	}
	return exitReport(res), nil
}

// ListExits returns the reports of recently ended processes, oldest first.
func (c *Client) ListExits(ctx context.Context) ([]*ExitReport, error) {
	res, err := c.exits.List(ctx, &pb.ListExitsRequest{})
	if err != nil {
		return nil, rpcError("exits.List", err)
	}
	out := make([]*ExitReport, 0, len(res.GetExits()))
	for _, r := range res.GetExits() {
		out = append(out, exitReport(r))
	}
	return out, nil
}

// PortState says whether a port opened or closed.
type PortState int

const (
	PortOpen   PortState = 1
	PortClosed PortState = 2
)

// PortEvent is a TCP listener in the sandbox opening or closing.
type PortEvent struct {
	State   PortState
	Port    uint16
	Address string // the address it listens on, e.g. "127.0.0.1", "::"
	Family  int    // 4 or 6
	PID     uint32 // the listener's owner; 0 (and Cmdline empty) when envd could not tell
	Cmdline string
	// Forwarded: envd forwards the port to the VM's external address.
	Forwarded bool
}

func portEvent(e *pb.PortEvent) PortEvent {
	return PortEvent{
		State: PortState(e.GetState()), Port: uint16(e.GetPort()), Address: e.GetAddress(),
		Family: int(e.GetFamily()), PID: e.GetPid(), Cmdline: e.GetCmdline(), Forwarded: e.GetForwarded(),
	}
}

// PortWatcher is a running port watch.
type PortWatcher struct {
	events chan PortEvent
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Events is the channel of events: first every port listening when the
// watch started (as PortOpen), then each open and close. It is closed when
// the watch ends.
func (w *PortWatcher) Events() <-chan PortEvent { return w.events }

// Err is why the watch ended, once Events is closed: nil after Close or the
// caller's context ending.
func (w *PortWatcher) Err() error {
	<-w.done
	return w.err
}

// Close stops the watch.
func (w *PortWatcher) Close() error {
	w.cancel()
	<-w.done
	return nil
}

// WatchPorts watches the sandbox's TCP listeners. It returns once envd has
// answered, so a port that opens after WatchPorts returns is reported.
func (c *Client) WatchPorts(ctx context.Context) (*PortWatcher, error) {
	const op = "ports.Watch"
	ctx, cancel := context.WithCancel(ctx)
	st, err := c.ports.Watch(ctx, &pb.WatchPortsRequest{})
	if err != nil {
		cancel()
		return nil, rpcError(op, err)
	}
	wd := newWatchdog(c.keepalive, cancel)
	// envd sends the current set (or a keepalive) before anything else:
	// the first message means it is watching.
	if !st.Receive() {
		defer st.Close()
		defer wd.stop()
		cancel()
		return nil, watchEnd(op, wd, false, st.Err())
	}
	wd.reset()
	w := &PortWatcher{events: make(chan PortEvent, 64), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer close(w.events)
		defer wd.stop()
		defer st.Close()
		for first := true; first || st.Receive(); first = false {
			wd.reset()
			m := st.Msg()
			if m.GetKeepalive() {
				continue
			}
			select {
			case w.events <- portEvent(m):
			case <-ctx.Done():
			}
		}
		w.err = watchEnd(op, wd, ctx.Err() != nil, st.Err())
	}()
	return w, nil
}

// WaitForPort returns once something listens on port (at once if something
// does). Give ctx a deadline: envd gets it as the call's Connect-Timeout-Ms
// and answers ErrDeadlineExceeded when it passes.
func (c *Client) WaitForPort(ctx context.Context, port uint16) (PortEvent, error) {
	res, err := c.ports.WaitFor(ctx, &pb.WaitForRequest{Port: uint32(port)})
	if err != nil {
		return PortEvent{}, rpcError("ports.WaitFor", err)
	}
	return portEvent(res), nil
}
