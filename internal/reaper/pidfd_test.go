package reaper_test

import (
	"errors"
	"log/slog"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/reaper"
	"github.com/envd-dev/envd/internal/testkit"
)

// Without Run nothing answers SIGCHLD, so only the pidfd and Reap can get
// the status to the waiter.
func TestPidFDWakesAndReapDelivers(t *testing.T) {
	r, err := reaper.New(slog.New(slog.DiscardHandler), false)
	if err != nil {
		t.Fatal(err)
	}
	cmd, args := testkit.Helper("hang")
	attr := &syscall.ProcAttr{Env: []string{"GORACE=atexit_sleep_ms=0"}, Sys: &syscall.SysProcAttr{Setpgid: true}}
	pid, exit, err := r.Start(func() (int, error) { return syscall.ForkExec(cmd, append([]string{cmd}, args...), attr) })
	if err != nil {
		t.Fatal(err)
	}
	f, err := r.PidFD(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Still running: Reap must neither block nor deliver.
	r.Reap(pid)
	select {
	case st := <-exit:
		t.Fatalf("status %v delivered for a running child", st)
	default:
	}
	if err := r.KillGroup(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n != 1 || fds[0].Revents&unix.POLLIN == 0 {
			t.Fatalf("poll pidfd: n=%d revents=%#x err=%v", n, fds[0].Revents, err)
		}
		break
	}
	r.Reap(pid)
	select {
	case st := <-exit:
		if !st.Signaled() || st.Signal() != syscall.SIGKILL {
			t.Fatalf("status %v", st)
		}
	default:
		t.Fatal("Reap of an exited child delivered nothing")
	}
	if _, err := r.PidFD(pid); !errors.Is(err, reaper.ErrGone) {
		t.Fatalf("PidFD after reap: %v", err)
	}
	r.Reap(pid) // no waiter any more: a no-op, not a second delivery
	select {
	case st := <-exit:
		t.Fatalf("second status %v", st)
	default:
	}
}
