package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"syscall"
	"time"

	"github.com/envd-dev/envd/internal/gen/process"
)

// Issue 16's process event rows: how fast a kill reaches the Start stream
// and how fast Connect attaches. Each is measured interleaved with its floor
// in the same loop, so the machine's load hits both alike.

// signalEnd times SendSignal SIGKILL → end event on the Start stream of a
// `sleep`, against Go killing and waiting for its own `sleep` child.
func (b *bench) signalEnd(ctx context.Context) []row {
	name := "SendSignal SIGKILL → end event on the Start stream"
	t := atMost(2.5)
	var envd, limit, answered durations
	const warm = 3
	for i := range b.sz.iters + warm {
		dl, err := killWaitFloor(ctx)
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		de, da, err := b.killToEnd(ctx)
		if err != nil {
			return []row{errRow(name, t, err)}
		}
		if i >= warm {
			envd, limit, answered = append(envd, de), append(limit, dl), append(answered, da)
		}
	}
	r := row{name: name, envd: fmtLatency(envd), limit: fmtLatency(limit) + " kill + wait4 from Go", target: t,
		note: "SendSignal itself answered after " + fmtLatency(answered)}
	r.judge(float64(envd.median()), float64(limit.median()))
	return []row{r}
}

func killWaitFloor(ctx context.Context) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, "sleep", "1000")
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		return 0, err
	}
	err := cmd.Wait()
	d := time.Since(t0)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		return 0, fmt.Errorf("sleep ended with %v, want SIGKILL", err)
	}
	return d, nil
}

// killToEnd starts `sleep`, waits for its start event, then times the
// SendSignal call plus the wait for the end event on the same stream.
func (b *bench) killToEnd(ctx context.Context) (end, answered time.Duration, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := b.proc.Start(ctx, startReq("sleep", "1000"))
	if err != nil {
		return 0, 0, fmt.Errorf("Start: %w", err)
	}
	defer stream.Close()
	if !stream.Receive() || stream.Msg().GetEvent().GetStart() == nil {
		return 0, 0, fmt.Errorf("Start: no start event first: %v", stream.Err())
	}
	pid := stream.Msg().GetEvent().GetStart().GetPid()
	t0 := time.Now()
	if _, err := b.proc.SendSignal(ctx, &process.SendSignalRequest{Process: pidSel(pid), Signal: process.Signal_SIGNAL_SIGKILL}); err != nil {
		return 0, 0, fmt.Errorf("SendSignal: %w", err)
	}
	answered = time.Since(t0)
	for stream.Receive() {
		if e := stream.Msg().GetEvent().GetEnd(); e != nil {
			end = time.Since(t0)
			if e.GetExited() || e.GetStatus() != "signal: killed" {
				return 0, 0, fmt.Errorf("end event %v, want killed by a signal", e)
			}
			return end, answered, nil
		}
	}
	return 0, 0, fmt.Errorf("Start stream ended without an end event: %v", stream.Err())
}

// connectFirst times Process.Connect to a running PTY process until its
// first event (start, with the pid), against a GET to a trivial net/http
// server inside this process.
func (b *bench) connectFirst(ctx context.Context) []row {
	name := "Process.Connect to a running PTY → first event"
	t := atMost(2.5)
	floor, err := startProcFloor()
	if err != nil {
		return []row{errRow(name, t, fmt.Errorf("in-process server: %w", err))}
	}
	defer floor.Close()
	floorURL := "http://" + floor.Addr().String() + "/"

	bg, cancel := context.WithCancel(ctx)
	defer cancel()
	req := startReq("/bin/cat")
	req.Stdin = nil
	req.Pty = &process.PTY{Size: &process.PTY_Size{Cols: 80, Rows: 24}}
	stream, err := b.proc.Start(bg, req)
	if err != nil {
		return []row{errRow(name, t, fmt.Errorf("Start: %w", err))}
	}
	defer stream.Close()
	if !stream.Receive() || stream.Msg().GetEvent().GetStart() == nil {
		return []row{errRow(name, t, fmt.Errorf("Start: no start event first: %v", stream.Err()))}
	}
	pid := stream.Msg().GetEvent().GetStart().GetPid()
	defer func() {
		_, _ = b.proc.SendSignal(context.Background(), &process.SendSignalRequest{Process: pidSel(pid), Signal: process.Signal_SIGNAL_SIGKILL})
	}()
	// The Start stream stays attached, as the SDKs keep it while a
	// terminal runs; drain it so it never back-pressures the pty.
	go func() {
		for stream.Receive() {
		}
	}()

	// A Connect stream the client drops costs its HTTP/1.1 connection, so
	// every attach after the first dials anew: a GET on a fresh connection
	// is printed beside the floor for scale.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	defer fresh.CloseIdleConnections()
	var envd, limit, dialed durations
	const warm = 20
	n := b.sz.iters * 5
	for i := range n + warm {
		t0 := time.Now()
		if err := floorGet(ctx, b.hc, floorURL); err != nil {
			return []row{errRow(name, t, fmt.Errorf("in-process GET: %w", err))}
		}
		dl := time.Since(t0)
		t0 = time.Now()
		if err := floorGet(ctx, fresh, floorURL); err != nil {
			return []row{errRow(name, t, fmt.Errorf("in-process GET, new connection: %w", err))}
		}
		df := time.Since(t0)
		t0 = time.Now()
		err := b.connectOnce(ctx, pid)
		de := time.Since(t0)
		if err != nil {
			return []row{errRow(name, t, err)}
		}
		if i >= warm {
			envd, limit, dialed = append(envd, de), append(limit, dl), append(dialed, df)
		}
	}
	r := row{name: name, envd: fmtLatency(envd), limit: fmtLatency(limit) + " GET, net/http in-process", target: t,
		note: fmt.Sprintf("the same GET on a new connection each time: %s (%.2f×)", fmtLatency(dialed), float64(envd.median())/float64(dialed.median()))}
	r.judge(float64(envd.median()), float64(limit.median()))
	return []row{r}
}

func (b *bench) connectOnce(ctx context.Context, pid uint32) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := b.proc.Connect(ctx, &process.ConnectRequest{Process: pidSel(pid)})
	if err != nil {
		return fmt.Errorf("Connect: %w", err)
	}
	defer s.Close()
	if !s.Receive() {
		return fmt.Errorf("Connect: no first event: %v", s.Err())
	}
	if st := s.Msg().GetEvent().GetStart(); st == nil || st.GetPid() != pid {
		return fmt.Errorf("Connect: first event %v, want the start of %d", s.Msg().GetEvent(), pid)
	}
	return nil
}

// startProcFloor serves "ok" on a loopback port from this process.
func startProcFloor() (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go func() { _ = srv.Serve(ln) }()
	return ln, nil
}

func floorGet(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && (resp.StatusCode != http.StatusOK || string(body) != "ok") {
		err = fmt.Errorf("%s: %q", resp.Status, body)
	}
	return err
}
