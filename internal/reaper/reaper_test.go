package reaper_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/reaper"
	"github.com/envd-dev/envd/internal/testkit"
)

const scenarioEnv = "ENVD_REAPER_ORPHAN_SCENARIO"

func TestMain(m *testing.M) {
	testkit.RunHelper()
	if os.Getenv(scenarioEnv) != "" {
		os.Exit(orphanScenario())
	}
	os.Exit(m.Run())
}

// orphanLog reports the pids the reaper logs as reaped orphans.
type orphanLog struct{ pids chan int }

func (h orphanLog) Enabled(context.Context, slog.Level) bool { return true }
func (h orphanLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h orphanLog) WithGroup(string) slog.Handler            { return h }
func (h orphanLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "reaped orphan" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "pid" {
				h.pids <- int(a.Value.Int64())
			}
			return true
		})
	}
	return nil
}

// orphanScenario runs in a child process (maybe PID 1 of a new namespace): a
// helper starts a grandchild and exits, the grandchild exits right after as
// an orphan, and the reaper must reap it.
func orphanScenario() int {
	pids := make(chan int, 16)
	r, err := reaper.New(slog.New(orphanLog{pids}), true)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	out, w, err := os.Pipe()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	cmd, args := testkit.Helper("orphan")
	attr := &syscall.ProcAttr{
		Env:   []string{"GORACE=atexit_sleep_ms=0"},
		Files: []uintptr{0, w.Fd(), 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	pid, exit, err := r.Start(func() (int, error) { return syscall.ForkExec(cmd, append([]string{cmd}, args...), attr) })
	w.Close()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		fmt.Println("read grandchild pid:", err)
		return 1
	}
	gpid, _ := strconv.Atoi(strings.TrimSpace(line))
	if st := <-exit; st.ExitStatus() != 0 {
		fmt.Println("helper", pid, "failed:", st)
		return 1
	}
	deadline := time.After(60 * time.Second)
	for {
		select {
		case p := <-pids:
			if p == gpid {
				fmt.Printf("reaped orphan %d as pid %d\n", gpid, os.Getpid())
				return 0
			}
		case <-deadline:
			fmt.Printf("orphan %d was never reaped\n", gpid)
			return 1
		}
	}
}

func runScenario(t *testing.T, name string, args ...string) string {
	t.Helper()
	c := exec.Command(name, args...)
	c.Env = append(os.Environ(), scenarioEnv+"=1", "GORACE=atexit_sleep_ms=0")
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	return string(out)
}

func TestReapsOrphanAsSubreaper(t *testing.T) {
	out := runScenario(t, os.Args[0])
	if !strings.Contains(out, "reaped orphan") {
		t.Fatalf("output: %s", out)
	}
}

func TestReapsOrphanAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a PID namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare(1) not installed")
	}
	out := runScenario(t, "unshare", "--pid", "--fork", "--mount-proc", os.Args[0])
	if !strings.Contains(out, "as pid 1\n") {
		t.Fatalf("output: %s", out)
	}
}

func TestStartKillGroupAndGone(t *testing.T) {
	r, err := reaper.New(slog.New(slog.DiscardHandler), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go r.Run(ctx)

	cmd, args := testkit.Helper("hang")
	attr := &syscall.ProcAttr{Env: []string{"GORACE=atexit_sleep_ms=0"}, Sys: &syscall.SysProcAttr{Setpgid: true}}
	pid, exit, err := r.Start(func() (int, error) { return syscall.ForkExec(cmd, append([]string{cmd}, args...), attr) })
	if err != nil {
		t.Fatal(err)
	}
	// An os/exec child running meanwhile keeps its own status: in this mode
	// the reaper waits only for pids it started.
	if err := exec.Command("sh", "-c", "exit 3").Run(); err == nil || err.(*exec.ExitError).ExitCode() != 3 {
		t.Fatalf("os/exec child: %v", err)
	}
	if err := r.KillGroup(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := <-exit; !st.Signaled() || st.Signal() != syscall.SIGKILL {
		t.Fatalf("status %v", st)
	}
	if err := r.KillGroup(pid, syscall.SIGKILL); !errors.Is(err, reaper.ErrGone) {
		t.Fatalf("kill after reap: %v", err)
	}
	if _, _, err := r.Start(func() (int, error) { return 0, syscall.ENOENT }); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("fork error not returned: %v", err)
	}
}
