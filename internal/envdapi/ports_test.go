package envdapi_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
	ppb "github.com/envd-dev/envd/internal/gen/process"
)

func freePort(t *testing.T) uint32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint32(ln.Addr().(*net.TCPAddr).Port)
}

// until polls cond; the bound only keeps a broken build from hanging.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// WaitFor returns once a command started after the call listens, naming
// the listener's owner; Watch then sees the port close when it exits.
func TestPortsWaitForAndWatch(t *testing.T) {
	s := newServer(t, options{})
	port := freePort(t)
	type result struct {
		ev  *pb.PortEvent
		err error
	}
	got := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ev, err := s.json.ports.WaitFor(ctx, &pb.WaitForRequest{Port: port})
		got <- result{ev, err}
	}()
	until(t, "WaitFor to subscribe", func() bool { return s.watcher.Subscribers() == 1 })
	pid := s.start(t, &ppb.StartRequest{Process: ownCmd("listen", strconv.Itoa(int(port)))})
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	ev := r.ev
	if ev.GetState() != pb.PortEvent_STATE_OPEN || ev.GetPort() != port || ev.GetAddress() != "127.0.0.1" || ev.GetFamily() != 4 ||
		ev.GetPid() != pid || !strings.Contains(ev.GetCmdline(), "listen "+strconv.Itoa(int(port))) || ev.GetForwarded() {
		t.Fatalf("WaitFor: %v (started pid %d)", ev, pid)
	}
	// Already listening: WaitFor answers at once.
	if ev, err := s.ports.WaitFor(t.Context(), &pb.WaitForRequest{Port: port}); err != nil || ev.GetPid() != pid {
		t.Fatalf("WaitFor an open port: %v %v", ev, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st, err := s.ports.Watch(ctx, &pb.WatchPortsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// First the current set, which holds the listener.
	for found := false; !found; {
		if !st.Receive() {
			t.Fatalf("watch ended: %v", st.Err())
		}
		e := st.Msg()
		found = e.GetState() == pb.PortEvent_STATE_OPEN && e.GetPort() == port && e.GetPid() == pid
	}
	if _, err := s.process.SendSignal(t.Context(), &ppb.SendSignalRequest{Process: &ppb.ProcessSelector{Selector: &ppb.ProcessSelector_Pid{Pid: pid}}, Signal: ppb.Signal_SIGNAL_SIGKILL}); err != nil {
		t.Fatal(err)
	}
	for {
		if !st.Receive() {
			t.Fatalf("watch ended before the close: %v", st.Err())
		}
		e := st.Msg()
		if e.GetPort() == port {
			if e.GetState() != pb.PortEvent_STATE_CLOSED || e.GetPid() != pid || e.GetAddress() != "127.0.0.1" {
				t.Fatalf("after the listener exited: %v", e)
			}
			break
		}
	}
	cancel()
	st.Close()
	until(t, "scanning to stop with the last watcher", func() bool { return s.watcher.Subscribers() == 0 })
}

func TestPortsBadInput(t *testing.T) {
	s := newServer(t, options{})
	for _, p := range []uint32{0, 65536} {
		_, err := s.ports.WaitFor(t.Context(), &pb.WaitForRequest{Port: p})
		wantCode(t, err, connect.CodeInvalidArgument, "port must be between 1 and 65535, got "+strconv.Itoa(int(p)))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := s.ports.WaitFor(ctx, &pb.WaitForRequest{Port: freePort(t)})
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("WaitFor past its deadline: %v", err)
	}
	until(t, "the timed-out WaitFor to unsubscribe", func() bool { return s.watcher.Subscribers() == 0 })
	healthy(t, s)
}
