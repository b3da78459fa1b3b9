package upgrade

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/freeze"
	"github.com/envd-dev/envd/internal/proc"
	"github.com/envd-dev/envd/internal/reaper"
)

const cgroupV2 = "/sys/fs/cgroup/unified"

// testCgroups makes a cgroup root with the workload groups named, each
// holding a sleeping process so freezing has something to settle.
func testCgroups(t *testing.T, groups ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cgroups need root")
	}
	root, err := os.MkdirTemp(cgroupV2, "envd-upgrade-unit-")
	if err != nil {
		t.Skipf("no writable cgroup v2 at %s: %v", cgroupV2, err)
	}
	var sleepers []*exec.Cmd
	t.Cleanup(func() {
		for _, c := range sleepers {
			c.Process.Kill()
			c.Wait()
		}
		for _, g := range append(groups, "") {
			for range 100 {
				if err := os.Remove(filepath.Join(root, g)); err == nil || errors.Is(err, os.ErrNotExist) {
					break
				}
				time.Sleep(10 * time.Millisecond) // a killed cgroup empties asynchronously
			}
		}
	})
	for _, g := range groups {
		dir := filepath.Join(root, g)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		c := exec.Command("sleep", "1000")
		c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
		err = c.Start()
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		sleepers = append(sleepers, c)
	}
	return root
}

func freezeOf(t *testing.T, root, g string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, g, "cgroup.freeze"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func testManager(t *testing.T) *proc.Manager {
	t.Helper()
	r, err := reaper.New(slog.New(slog.DiscardHandler), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	m := proc.NewManager(proc.Options{Reaper: r, Env: execenv.NewEnv(os.Getenv("PATH"))})
	t.Cleanup(func() {
		for _, p := range m.Live() {
			_ = p.Signal(syscall.SIGKILL)
			<-p.Done()
		}
		cancel()
		<-done
	})
	return m
}

func startSleep(t *testing.T, m *proc.Manager, pty bool) *proc.Process {
	t.Helper()
	u, err := execenv.LookupUser("root")
	if err != nil {
		t.Fatal(err)
	}
	o := proc.StartOptions{Config: proc.Config{Cmd: "sleep", Args: []string{"1000"}}, User: u, Stdin: true, Tag: "s", HasTag: true,
		Deadline: time.Now().Add(time.Hour)}
	if pty {
		o.PTY = &proc.Size{Cols: 80, Rows: 24}
	}
	p, _, err := m.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A workload that does not settle frozen aborts the handover before
// anything is touched: no exec, thawed, every lock free again.
func TestUpgradeAbortsWhenNotFrozen(t *testing.T) {
	root := testCgroups(t, "user") // "ptys" is missing: its freeze fails
	fr := freeze.New(freeze.Config{Root: root})
	m := testManager(t)
	startSleep(t, m, false)
	u := &Upgrader{
		BlobPath: filepath.Join(t.TempDir(), BlobName),
		Procs:    m,
		Freezer:  fr,
		Argv:     []string{"envd"},
		Exec: func(string, []string, []string) error {
			t.Fatal("exec after a failed freeze")
			return nil
		},
	}
	if err := u.Upgrade("/nonexistent"); !errors.Is(err, ErrNotFrozen) || err.Error() != "handover aborted: freeze workload: workload was not frozen before the handover" {
		t.Fatalf("Upgrade: %v", err)
	}
	if got := freezeOf(t, root, "user"); got != "0" {
		t.Fatalf("user cgroup.freeze %s after the abort", got)
	}
	// A lock still held hangs here until the test binary's timeout.
	fr.Lock()
	fr.Unlock()
	if _, err := os.Stat(u.BlobPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("blob written by an aborted handover: %v", err)
	}
	startSleep(t, m, false) // the table takes new processes
}

// At exec time the blob describes the processes and their descriptors sit
// inheritable on their slots; when the exec fails everything is undone.
func TestUpgradeExecFailureUndoes(t *testing.T) {
	root := testCgroups(t, "user", "ptys")
	fr := freeze.New(freeze.Config{Root: root})
	m := testManager(t)
	pipe := startSleep(t, m, false)
	pty := startSleep(t, m, true)
	blob := filepath.Join(t.TempDir(), BlobName)
	var execd bool
	u := &Upgrader{
		Version:  "0.7.0",
		BlobPath: blob,
		Procs:    m,
		Mounts:   ledger{"/mnt/b": "L2", "/mnt/a": "L1"},
		Freezer:  fr,
		Argv:     []string{"/usr/bin/envd", "-isnotfc"},
		Exec: func(path string, argv, env []string) error {
			execd = true
			if path != "/new" || strings.Join(argv, " ") != "/new -isnotfc --resume-handover" || len(env) == 0 {
				t.Errorf("exec %s %q", path, argv)
			}
			for _, g := range []string{"user", "ptys"} {
				if got := freezeOf(t, root, g); got != "1" {
					t.Errorf("%s not frozen at exec: %s", g, got)
				}
			}
			st, err := os.Stat(blob)
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("blob %v %v", st, err)
			}
			b, _ := os.ReadFile(blob)
			s, err := Decode(b)
			if err != nil || s.Schema != 1 || s.FromVer != "0.7.0" || len(s.Procs) != 2 {
				t.Fatalf("blob %+v %v", s, err)
			}
			if len(s.Mounts) != 2 || s.Mounts[0] != (Mount{"/mnt/a", "L1"}) || s.Mounts[1] != (Mount{"/mnt/b", "L2"}) {
				t.Errorf("ledger in the blob %v", s.Mounts)
			}
			for _, p := range s.Procs {
				var slots []int
				switch p.Pid {
				case pipe.Pid():
					if p.CgType != "user" || p.TTY != -1 {
						t.Errorf("pipe process %+v", p)
					}
					slots = []int{p.Stdout, p.Stderr, p.Stdin}
				case pty.Pid():
					if p.CgType != "pty" || p.Stdout != -1 || p.Stderr != -1 || p.Stdin != -1 {
						t.Errorf("pty process %+v", p)
					}
					slots = []int{p.TTY}
				default:
					t.Errorf("unknown pid %d", p.Pid)
				}
				if p.TimeoutMS <= 0 || p.TimeoutMS > time.Hour.Milliseconds() {
					t.Errorf("timeout %d", p.TimeoutMS)
				}
				// envd's additions: the (empty) output log and the start time.
				if p.Log == nil || p.StartedAt.IsZero() {
					t.Errorf("pid %d carries log %v, start %v", p.Pid, p.Log, p.StartedAt)
				}
				for _, s := range slots {
					flags, err := unix.FcntlInt(uintptr(s), unix.F_GETFD, 0)
					if s < SlotBase || err != nil || flags&unix.FD_CLOEXEC != 0 {
						t.Errorf("slot %d: flags %d, %v", s, flags, err)
					}
				}
			}
			return syscall.ENOEXEC
		},
	}
	err := u.Upgrade("/new")
	if !execd || err == nil || err.Error() != "execve /new: exec format error" {
		t.Fatalf("Upgrade: %v", err)
	}
	for s := SlotBase; s < SlotBase+2*slotStride; s++ {
		if _, err := unix.FcntlInt(uintptr(s), unix.F_GETFD, 0); err != unix.EBADF {
			t.Fatalf("slot %d still open after the failed exec", s)
		}
	}
	if _, err := os.Stat(blob); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("blob left after the failed exec: %v", err)
	}
	for _, g := range []string{"user", "ptys"} {
		if got := freezeOf(t, root, g); got != "0" {
			t.Fatalf("%s frozen after the failed exec: %s", g, got)
		}
	}
	// The old image goes on: its processes take input, the table starts new ones.
	if err := pty.WritePTY(context.Background(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	startSleep(t, m, false)
}

// ledger is the NFS mount ledger's interface over a plain map.
type ledger map[string]string

func (l ledger) Ledger() map[string]string { return maps.Clone(l) }

func (l ledger) Restore(m map[string]string) {
	clear(l)
	maps.Copy(l, m)
}
