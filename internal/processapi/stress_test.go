package processapi_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/envd-dev/envd/internal/gen/process"
)

// 256 MiB through a stream whose reader stops twice for a while: with
// back-pressure nothing is lost, reordered or duplicated.
func TestBackPressureLossless(t *testing.T) {
	s := newServer(t)
	const size = 256 << 20
	st, err := s.client.Start(t.Context(), &pb.StartRequest{Process: helper("write", strconv.Itoa(size)), Stdin: ptr(false)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := sha256.New()
	var got int
	var stderr []byte
	var end *pb.ProcessEvent_EndEvent
	paused := 0
	for st.Receive() {
		e := st.Msg().GetEvent()
		if d := e.GetData(); d != nil {
			h.Write(d.GetStdout())
			got += len(d.GetStdout())
			stderr = append(stderr, d.GetStderr()...)
			// Pause twice; the process must wait for us, not drop output.
			if paused < 2 && got > (paused+1)*(64<<20) {
				paused++
				time.Sleep(300 * time.Millisecond)
			}
		}
		if e.GetEnd() != nil {
			end = e.GetEnd()
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if end.GetExitCode() != 0 || got != size {
		t.Fatalf("end %v, got %d bytes of %d", end, got, size)
	}
	if sum := fmt.Sprintf("%x", h.Sum(nil)); sum != strings.TrimSpace(string(stderr)) {
		t.Fatalf("checksum at the client %s, at the process %s", sum, stderr)
	}
}

// A client that goes away mid-stream neither kills the process nor hurts the
// service, and a new Connect gets the output from then on; for pipes and ptys.
func TestDisconnectMidStream(t *testing.T) {
	for _, mode := range []string{"pipes", "pty"} {
		t.Run(mode, func(t *testing.T) {
			s := newServer(t)
			req := &pb.StartRequest{Process: helper("write", strconv.Itoa(1<<50)), Tag: ptr("chatty")}
			out := func(ev *events) int { return len(ev.stdout) }
			if mode == "pty" {
				req.Pty = &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}}
				out = func(ev *events) int { return len(ev.pty) }
			}
			ctx, cancel := context.WithCancel(t.Context())
			st, err := s.json.Start(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			ev := &events{}
			for out(ev) < 1<<20 && st.Receive() {
				ev.add(st.Msg().GetEvent())
			}
			cancel()
			st.Close()

			s.healthy(t)
			list, err := s.client.List(t.Context(), &pb.ListRequest{})
			if err != nil || len(list.GetProcesses()) != 1 || list.GetProcesses()[0].GetPid() != ev.pid {
				t.Fatalf("process gone after disconnect: %v %v", list, err)
			}
			cs, err := s.client.Connect(t.Context(), &pb.ConnectRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: "chatty"}}})
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			cev := &events{}
			for out(cev) < 1<<20 && cs.Receive() {
				cev.add(cs.Msg().GetEvent())
			}
			if cev.pid != ev.pid || out(cev) < 1<<20 {
				t.Fatalf("reconnect: pid %d (want %d), %d bytes, err %v", cev.pid, ev.pid, out(cev), cs.Err())
			}
			if _, err := s.client.SendSignal(t.Context(), &pb.SendSignalRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: ev.pid}}, Signal: pb.Signal_SIGNAL_SIGKILL}); err != nil {
				t.Fatal(err)
			}
			for cs.Receive() {
				cev.add(cs.Msg().GetEvent())
			}
			if cev.end.GetStatus() != "signal: killed" {
				t.Fatalf("end %v err %v", cev.end, cs.Err())
			}
		})
	}
}

// 10,000 processes in a row leave no zombie, no descriptor and no goroutine behind.
func TestManySequentialProcesses(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 1_000
	}
	s := newServer(t)
	req := &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/true"}, Stdin: ptr(false)}
	for range 10 { // warm up connections and pools
		run(t, s.client, req)
	}
	fds, goroutines := countFDs(t), runtime.NumGoroutine()
	for i := range n {
		ev := run(t, s.client, req)
		if ev.end == nil || ev.end.GetExitCode() != 0 {
			t.Fatalf("process %d: %v", i, ev.end)
		}
		// Mixed in: pipes with stdin and a pty, the other descriptor paths.
		if i%500 == 0 {
			run(t, s.client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/true"}})
			run(t, s.client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/true"}, Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}}})
		}
	}
	if z := zombies(t); len(z) != 0 {
		t.Fatalf("zombie children: %v", z)
	}
	// A little slack: HTTP connections and goroutines come and go with the
	// client's pool; a leak per process would show thousands.
	if after := countFDs(t); after > fds+4 {
		t.Fatalf("fds %d before, %d after %d processes", fds, after, n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines+10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > goroutines+10 {
		t.Fatalf("goroutines %d before, %d after", goroutines, g)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// zombies lists our children in state Z.
func zombies(t *testing.T) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	me := os.Getpid()
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state, ppid, ...
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(me) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			out = append(out, pid)
		}
	}
	return out
}
