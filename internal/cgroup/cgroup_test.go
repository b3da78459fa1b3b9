package cgroup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/envd-dev/envd/internal/testkit"
)

const helperEnv = "ENVD_CGROUP_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "wait":
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case "hog":
		// Touch every page so the memory is charged, until the kernel kills us.
		var keep [][]byte
		for range 4096 {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep), "MiB without being killed")
		os.Exit(3)
	}
	os.Exit(2)
}

func TestParseKeyed(t *testing.T) {
	memoryEvents := "low 0\nhigh 12\nmax 40\noom 2\noom_kill 1\noom_group_kill 0\n"
	meminfo := "MemTotal:        2014564 kB\nMemFree:          115292 kB\nMemAvailable:    1300000 kB\n"
	tests := []struct {
		text, key string
		want      int
		ok        bool
	}{
		{memoryEvents, "oom_kill", 1, true},
		{memoryEvents, "high", 12, true},
		{memoryEvents, "oom", 2, true}, // not confused with oom_kill
		{meminfo, "MemTotal", 2014564, true},
		{meminfo, "MemAvailable", 1300000, true},
		{memoryEvents, "missing", 0, false},
		{"oom_kill x\n", "oom_kill", 0, false},
		{"", "oom_kill", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseKeyed([]byte(tt.text), tt.key)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseKeyed(%q, %q) = %d, %v; want %d, ok=%v", tt.text, tt.key, got, err, tt.want, tt.ok)
		}
	}
}

func TestLimits(t *testing.T) {
	find := func(ls []limit, g Group, file string) (string, bool) {
		for _, l := range ls {
			if l.group == g && l.file == file {
				return l.value, true
			}
		}
		return "", false
	}
	// 512 MiB VM: total/8 = 64 MiB < 128 MiB.
	ls := limits([]byte("MemTotal:         524288 kB\n"))
	if v, _ := find(ls, User, "memory.high"); v != strconv.Itoa(448<<20) {
		t.Errorf("512 MiB VM: user memory.high = %s, want %d", v, 448<<20)
	}
	// 4 GiB VM: the 128 MiB cap applies.
	ls = limits([]byte("MemTotal:        4194304 kB\n"))
	if v, _ := find(ls, User, "memory.high"); v != strconv.Itoa(4096<<20-128<<20) {
		t.Errorf("4 GiB VM: user memory.high = %s", v)
	}
	if v, _ := find(ls, PTY, "cpu.weight"); v != "200" {
		t.Errorf("ptys cpu.weight = %q", v)
	}
	if v, _ := find(ls, Envd, "memory.min"); v != strconv.Itoa(5<<20) {
		t.Errorf("envd memory.min = %q", v)
	}
	if _, ok := find(limits(nil), User, "memory.high"); ok {
		t.Error("memory.high set without MemTotal")
	}
}

// countingHandler counts warnings.
type countingHandler struct {
	slog.Handler
	warns *int
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		*h.warns++
	}
	return nil
}

func TestFallbackWhenNotCgroup2(t *testing.T) {
	for name, root := range map[string]string{
		"tmp dir":   t.TempDir(),
		"missing":   filepath.Join(t.TempDir(), "nope"),
		"proc root": "/proc",
	} {
		t.Run(name, func(t *testing.T) {
			warns := 0
			m := Open(root, nil, slog.New(countingHandler{slog.DiscardHandler, &warns}))
			defer m.Close()
			if m.Enabled() {
				t.Fatal("Manager enabled on a non-cgroup2 root")
			}
			if fd, ok := m.CgroupFD(false); ok {
				t.Fatalf("CgroupFD = %d, true on a disabled Manager", fd)
			}
			if warns != 1 {
				t.Errorf("%d warnings, want exactly 1", warns)
			}
			if err := m.Join(User, 0); err != nil {
				t.Errorf("Join on a disabled Manager: %v", err)
			}
			if entries, _ := os.ReadDir(root); len(entries) != 0 && name == "tmp dir" {
				t.Errorf("disabled Manager left files behind: %v", entries)
			}
		})
	}
	if Disabled().Enabled() {
		t.Error("Disabled() is enabled")
	}
}

// cgroup2Mount finds a writable cgroup2 mount, or says why there is none.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mountpoint ... - fstype source options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		fields := strings.Fields(pre)
		if len(fields) >= 5 && !strings.Contains(" "+fields[5]+",", "ro,") {
			return fields[4]
		}
	}
	t.Skip("no writable cgroup2 mount in /proc/self/mountinfo")
	return ""
}

// testRoot makes a fresh directory under the cgroup2 mount for one test and
// removes it and its groups afterwards.
func testRoot(t *testing.T, mount string) string {
	t.Helper()
	root := filepath.Join(mount, fmt.Sprintf("envd-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_")))
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, g := range Groups() {
			if err := os.Remove(filepath.Join(root, string(g))); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("remove group: %v", err)
			}
		}
		if err := os.Remove(root); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	return root
}

// startIn starts the "wait" helper with CLONE_INTO_CGROUP into fd.
func startIn(t *testing.T, fd int, mode string, stdout io.Writer) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	cmd.Stdout = stdout
	var stdin io.WriteCloser
	if mode == "wait" {
		if stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdin
}

func TestPlacementRealCgroup2(t *testing.T) {
	root := testRoot(t, cgroup2Mount(t))
	warns := 0
	m := Open(root, []byte("MemTotal: 524288 kB\n"), slog.New(countingHandler{slog.DiscardHandler, &warns}))
	defer m.Close()
	if !m.Enabled() {
		t.Fatalf("Manager disabled on cgroup2 root %s", root)
	}
	if warns != 0 {
		t.Errorf("%d warnings on a healthy cgroup2 root", warns)
	}
	for _, g := range Groups() {
		if err := IsCgroup2(m.Path(g)); err != nil {
			t.Errorf("group %s: %v", g, err)
		}
	}
	for _, tc := range []struct {
		pty   bool
		group Group
	}{{false, User}, {true, PTY}} {
		fd, ok := m.CgroupFD(tc.pty)
		if !ok {
			t.Fatalf("CgroupFD(%v) not ok", tc.pty)
		}
		cmd, stdin := startIn(t, fd, "wait", nil)
		pids, err := m.Procs(tc.group)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(pids, []int{cmd.Process.Pid}) {
			t.Errorf("pty=%v: %s/cgroup.procs = %v, want [%d]", tc.pty, tc.group, pids, cmd.Process.Pid)
		}
		self, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(self), "/"+filepath.Base(root)+"/"+string(tc.group)+"\n") {
			t.Errorf("/proc/%d/cgroup = %q, want it in %s", cmd.Process.Pid, self, tc.group)
		}
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
		if pids, _ := m.Procs(tc.group); len(pids) != 0 {
			t.Errorf("%s still holds %v after the child exited", tc.group, pids)
		}
	}
}

func startWaiter(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=wait")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	return cmd
}

func TestOOMScore(t *testing.T) {
	o := OOM{ProcRoot: "/proc"}
	t.Run("reset child", func(t *testing.T) {
		cmd := startWaiter(t)
		if err := o.Reset(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		if s, err := o.Score(strconv.Itoa(cmd.Process.Pid)); err != nil || s != UserScore {
			t.Errorf("child score = %d, %v after Reset, want %d", s, err, UserScore)
		}
		if err := (OOM{ProcRoot: t.TempDir()}).Reset(1); err == nil {
			t.Error("Reset under an empty proc root succeeded")
		}
	})
	t.Run("protect self, child inherits", func(t *testing.T) {
		if os.Geteuid() != 0 || !testkit.HasCapSysResource(t) {
			t.Skip("needs CAP_SYS_RESOURCE to lower oom_score_adj; this process's effective capabilities lack it")
		}
		orig, err := o.Score("self")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := o.set("self", orig); err != nil {
				t.Errorf("restore oom_score_adj: %v", err)
			}
		})
		if err := o.Protect(); err != nil {
			t.Fatal(err)
		}
		if s, _ := o.Score("self"); s != EnvdScore {
			t.Fatalf("own score = %d after Protect, want %d", s, EnvdScore)
		}
		cmd := startWaiter(t)
		pid := strconv.Itoa(cmd.Process.Pid)
		// The inheritance Reset exists for.
		if s, _ := o.Score(pid); s != EnvdScore {
			t.Fatalf("child score = %d, want the inherited %d", s, EnvdScore)
		}
		if err := o.Reset(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		if s, _ := o.Score(pid); s != UserScore {
			t.Errorf("child score = %d after Reset, want %d", s, UserScore)
		}
	})
}

// TestMemoryLimitOOMKill runs wherever cgroup2 has the memory controller.
func TestMemoryLimitOOMKill(t *testing.T) {
	mount := cgroup2Mount(t)
	ctrls, err := Controllers(mount)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ctrls, "memory") {
		t.Skip(memorySkipReason(mount, ctrls))
	}
	if err := os.WriteFile(filepath.Join(mount, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
		t.Fatalf("enable memory in %s: %v", mount, err)
	}
	root := testRoot(t, mount)
	m := Open(root, nil, slog.New(slog.DiscardHandler))
	defer m.Close()
	if err := m.SetMemoryMax(User, 64<<20); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(m.Path(User), "memory.swap.max"), []byte("0"), 0)
	fd, _ := m.CgroupFD(false)
	var out bytes.Buffer
	cmd, _ := startIn(t, fd, "hog", &out)
	_ = OOM{ProcRoot: "/proc"}.Reset(cmd.Process.Pid)
	err = cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("hog ended with %v (%s), want SIGKILL by the OOM killer", err, out.String())
	}
	if n, err := m.OOMKills(User); err != nil || n < 1 {
		t.Errorf("user memory.events oom_kill = %d, %v; want ≥ 1", n, err)
	}
}

// memorySkipReason says where memory is if not in cgroup2, from the mounts.
func memorySkipReason(mount string, ctrls []string) string {
	reason := fmt.Sprintf("memory controller not enabled in cgroup2 at %s (cgroup.controllers: %q)", mount, strings.Join(ctrls, " "))
	b, _ := os.ReadFile("/proc/self/mounts")
	var bound []string
	for _, c := range V1Controllers(b) {
		if c == "memory" || c == "cpu" || c == "pids" {
			bound = append(bound, c)
		}
	}
	if len(bound) > 0 {
		reason += ": " + strings.Join(bound, ", ") + " are bound to cgroup v1 on this machine"
	}
	return reason
}

func TestV1Controllers(t *testing.T) {
	mounts := `proc /proc proc rw,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/net_cls,net_prio cgroup rw,nosuid,nodev,noexec,relatime,net_cls,net_prio 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,xattr,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
`
	got := V1Controllers([]byte(mounts))
	want := []string{"cpu", "memory", "net_cls", "net_prio"}
	if !slices.Equal(got, want) {
		t.Errorf("V1Controllers = %v, want %v", got, want)
	}
	if got := V1Controllers([]byte("cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n")); len(got) != 0 {
		t.Errorf("pure cgroup2 machine: %v", got)
	}
}
