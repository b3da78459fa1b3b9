package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/client"
	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/envdtest"
)

// readLog collects one ReadOutput to its end: the bytes, the gaps and the
// exit report, checking that offsets run on without a hole nobody reported.
func readLog(t *testing.T, c *client.Client, sel client.Selector, o client.ReadOptions) ([]byte, []client.Gap, *client.ExitReport) {
	t.Helper()
	r, err := c.ReadOutput(t.Context(), sel, o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var data []byte
	var gaps []client.Gap
	var exit *client.ExitReport
	next := o.Offset
	for {
		ev, err := r.Recv()
		if errors.Is(err, io.EOF) {
			return data, gaps, exit
		}
		if err != nil {
			t.Fatal(err)
		}
		if exit != nil {
			t.Fatalf("event %+v after the exit report", ev)
		}
		switch {
		case ev.Gap != nil:
			if ev.Gap.Offset != next || ev.Offset != next {
				t.Fatalf("gap %+v at %d, want offset %d", ev.Gap, ev.Offset, next)
			}
			next += ev.Gap.Dropped
			gaps = append(gaps, *ev.Gap)
		case ev.Exit != nil:
			exit = ev.Exit
		default:
			if ev.Offset != next {
				t.Fatalf("chunk at %d, want %d", ev.Offset, next)
			}
			next += uint64(len(ev.Data))
			data = append(data, ev.Data...)
		}
	}
}

func TestReadOutputAfterExit(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	res, err := c.Run(ctx, client.Cmd{Cmd: "/bin/sh", Args: []string{"-c", "printf hello-world; printf oops >&2; exit 4"}, Tag: "done"})
	if err != nil {
		t.Fatal(err)
	}
	// Read by pid from the start, by tag from an offset, and stderr.
	data, gaps, exit := readLog(t, c, client.PID(res.PID), client.ReadOptions{})
	if string(data) != "hello-world" || len(gaps) != 0 || exit == nil {
		t.Fatalf("stdout %q gaps %v exit %+v", data, gaps, exit)
	}
	if exit.PID != res.PID || exit.Code != 4 || exit.Signal != "" || exit.ShellCode() != 4 || exit.Tag != "done" || !exit.HasTag ||
		exit.StdoutBytes != 11 || exit.StderrBytes != 4 || exit.DroppedBytes != 0 || exit.EndedAt.Before(exit.StartedAt) {
		t.Fatalf("exit report %+v", exit)
	}
	if data, _, _ := readLog(t, c, client.Tag("done"), client.ReadOptions{Offset: 6}); string(data) != "world" {
		t.Fatalf("from offset 6: %q", data)
	}
	if data, _, _ := readLog(t, c, client.PID(res.PID), client.ReadOptions{Stream: client.Stderr}); string(data) != "oops" {
		t.Fatalf("stderr %q", data)
	}
	// The report is also Wait's (at once, it has ended) and in the list.
	w, err := c.WaitExit(ctx, client.PID(res.PID))
	if err != nil || w.Code != 4 || w.PID != res.PID {
		t.Fatalf("WaitExit %+v %v", w, err)
	}
	list, err := c.ListExits(ctx)
	if err != nil || !slices.ContainsFunc(list, func(r *client.ExitReport) bool { return r.PID == res.PID && r.Code == 4 }) {
		t.Fatalf("ListExits %v %v", list, err)
	}
}

// A follow sees output written after it attached, and ends with the report
// of a process killed by a signal.
func TestReadOutputFollowAndWaitExit(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	p, err := c.Start(ctx, client.Cmd{Cmd: "cat", Tag: "follow"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r, err := c.ReadOutput(ctx, client.Tag("follow"), client.ReadOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waited := make(chan *client.ExitReport, 1)
	go func() {
		rep, err := c.WaitExit(ctx, client.Tag("follow"))
		if err != nil {
			t.Error(err)
		}
		waited <- rep
	}()
	if err := c.SendInput(ctx, client.PID(p.PID), []byte("live\n")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for string(got) != "live\n" {
		ev, err := r.Recv()
		if err != nil || ev.Data == nil {
			t.Fatalf("event %+v, %v; want data", ev, err)
		}
		got = append(got, ev.Data...)
	}
	if err := c.Signal(ctx, client.PID(p.PID), client.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ev, err := r.Recv()
	if err != nil || ev.Exit == nil {
		t.Fatalf("after kill: %+v %v; want the exit report", ev, err)
	}
	if x := ev.Exit; x.Signal != "SIGKILL" || x.Code != -1 || x.ShellCode() != 137 || x.StdoutBytes != 5 {
		t.Fatalf("report %+v", x)
	}
	if _, err := r.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the report: %v, want io.EOF", err)
	}
	if rep := <-waited; rep == nil || rep.Signal != "SIGKILL" || rep.PID != p.PID {
		t.Fatalf("WaitExit %+v", rep)
	}
}

// Evicted output is a Gap of exactly the bytes lost, and the bytes kept are
// the ones written at those offsets.
func TestReadOutputGap(t *testing.T) {
	const limit = 1 << 20
	s := envdtest.Start(t, func(c *config.Config) { c.OutputLogLimit = limit })
	c := s.NewClient(t)
	const n = 3<<20 + 5
	res, err := c.Run(t.Context(), client.Cmd{Cmd: "/bin/sh", Args: []string{"-c", "yes abcdefg | head -c 3145733"}})
	if err != nil || res.Code != 0 || len(res.Stdout) != n {
		t.Fatalf("run: %v, %d bytes", err, len(res.Stdout))
	}
	data, gaps, exit := readLog(t, c, client.PID(res.PID), client.ReadOptions{})
	if len(gaps) != 1 || gaps[0].Offset != 0 || gaps[0].Dropped+uint64(len(data)) != n || len(data) > limit || len(data) == 0 {
		t.Fatalf("gaps %+v, %d bytes kept of %d", gaps, len(data), n)
	}
	if !bytes.Equal(data, res.Stdout[gaps[0].Dropped:]) {
		t.Fatal("kept bytes differ from what the process wrote at those offsets")
	}
	if exit == nil || exit.DroppedBytes != gaps[0].Dropped || exit.StdoutBytes != n {
		t.Fatalf("report %+v, gap %+v", exit, gaps[0])
	}
}

func TestV1Errors(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	if _, err := c.ReadOutput(ctx, client.PID(999999), client.ReadOptions{}); !errors.Is(err, client.ErrNotFound) {
		// The error may come with the first Recv instead of the call.
		t.Fatalf("ReadOutput of a missing pid: %v, want ErrNotFound", err)
	}
	res, err := c.Run(ctx, client.Cmd{Cmd: "true"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadOutput(ctx, client.PID(res.PID), client.ReadOptions{Stream: 9}); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("unknown stream: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.WaitExit(ctx, client.Tag("no-such-tag")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("WaitExit of a missing tag: %v, want ErrNotFound", err)
	}
	p, err := c.Start(ctx, client.Cmd{Cmd: "sleep", Args: []string{"1000"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.WaitExit(short, client.PID(p.PID)); !errors.Is(err, client.ErrDeadlineExceeded) {
		t.Fatalf("WaitExit past its deadline: %v, want ErrDeadlineExceeded", err)
	}
	if list, err := c.List(ctx); err != nil || !slices.ContainsFunc(list, func(i client.ProcessInfo) bool { return i.PID == p.PID }) {
		t.Fatalf("the deadline ended the process: %v %v", list, err)
	}
	if _, err := c.WaitForPort(ctx, 0); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("WaitForPort(0): %v, want ErrInvalidArgument", err)
	}
}

func TestPorts(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	w, err := c.WatchPorts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A process of the sandbox listens; it prints the port it got.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Start(ctx, client.Cmd{Cmd: exe, Env: map[string]string{listenEnv: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var out []byte
	for !bytes.HasSuffix(out, []byte("\n")) {
		ev, err := p.Recv()
		if err != nil || ev.End != nil {
			t.Fatalf("listener: %+v %v (output %q)", ev, err, out)
		}
		out = append(append(out, ev.Stdout...), ev.Stderr...)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("listener said %q", out)
	}
	port := uint16(n)
	ev, err := c.WaitForPort(ctx, port)
	if err != nil || ev.State != client.PortOpen || ev.Port != port || ev.Address != "127.0.0.1" || ev.Family != 4 || ev.PID != p.PID {
		t.Fatalf("WaitForPort %+v %v", ev, err)
	}
	next := func(state client.PortState) client.PortEvent {
		t.Helper()
		for e := range w.Events() {
			if e.Port == port && e.State == state {
				return e
			}
		}
		t.Fatalf("watch ended before port %d reached state %d: %v", port, state, w.Err())
		return client.PortEvent{}
	}
	if e := next(client.PortOpen); e.PID != p.PID || e.Forwarded {
		t.Fatalf("open event %+v, listener pid %d", e, p.PID)
	}
	if err := p.CloseStdin(ctx); err != nil {
		t.Fatal(err)
	}
	next(client.PortClosed)
	// A port nobody opens: the call's deadline, reported as such.
	free, _ := net.Listen("tcp", "127.0.0.1:0")
	unused := uint16(free.Addr().(*net.TCPAddr).Port)
	free.Close()
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.WaitForPort(short, unused); !errors.Is(err, client.ErrDeadlineExceeded) {
		t.Fatalf("WaitForPort past its deadline: %v, want ErrDeadlineExceeded", err)
	}
	w.Close()
	if err := w.Err(); err != nil {
		t.Fatalf("Err after Close: %v", err)
	}
	// Events is closed once Close returned, so this ends.
	for range w.Events() {
	}
}
