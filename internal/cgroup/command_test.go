package cgroup

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A command group is created fresh under its kind's group, receives the
// child at clone time, reports what cpu.stat counted (a core file, present
// without the cpu controller), and is removed; a process still in it moves
// to the escaped leaf first.
func TestCommandGroups(t *testing.T) {
	root := testRoot(t, cgroup2Mount(t))
	m := Open(root, nil, slog.New(slog.DiscardHandler))
	defer m.Close()
	t.Cleanup(func() {
		for _, g := range []Group{User, PTY} {
			os.Remove(filepath.Join(root, string(g), escaped))
		}
	})
	a, err := m.Command(false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Command(true)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(a.Path()) != m.Path(User) || filepath.Dir(b.Path()) != m.Path(PTY) || a.Path() == filepath.Join(m.Path(User), filepath.Base(b.Path())) {
		t.Fatalf("groups %s and %s", a.Path(), b.Path())
	}
	// A child that exits at once: measured, then its group goes.
	cmd, stdin := startIn(t, a.FD(), "wait", nil)
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	a.CloseFD()
	u := a.Usage()
	if !u.HasCPU || u.CPUUserUsec+u.CPUSystemUsec == 0 {
		t.Fatalf("usage %+v: no CPU time for a process that ran", u)
	}
	ctrls, _ := Controllers(m.Path(User))
	if mem := strings.Contains(" "+strings.Join(ctrls, " ")+" ", " memory "); u.HasPeakMemory != mem || u.HasOOMKills != mem {
		t.Fatalf("usage %+v with controllers %q", u, ctrls)
	}
	if err := a.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("group still there: %v", err)
	}
	// A process still running in the group is moved out, not killed.
	cmd, stdin = startIn(t, b.FD(), "wait", nil)
	defer func() { stdin.Close(); cmd.Wait() }()
	if err := b.Remove(); err != nil {
		t.Fatal(err)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	want := "/" + filepath.Base(root) + "/" + string(PTY) + "/" + escaped + "\n"
	if !strings.Contains(string(cg), want) {
		t.Fatalf("survivor in %q, want %s", cg, want)
	}
	if _, err := os.Stat(b.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("group still there: %v", err)
	}
	// A disabled Manager gives no group and no error.
	if c, err := Disabled().Command(false); c != nil || err != nil {
		t.Fatalf("disabled: %v %v", c, err)
	}
}
