package boot_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/boot"
	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/daemon"
	"github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
	"github.com/envd-dev/envd/internal/testkit"
)

// pid1Env makes the test binary run as envd's main does — boot steps, then
// the daemon until SIGTERM — with the boot root taken from the variable.
const pid1Env = "ENVD_BOOT_PID1_ROOT"

const pid1Port = 49983

func TestMain(m *testing.M) {
	if root := os.Getenv(pid1Env); root != "" {
		os.Exit(runPID1(root))
	}
	os.Exit(m.Run())
}

func runPID1(root string) int {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	cfg, err := config.Parse([]string{"-isnotfc", "-no-cgroups", "-port", strconv.Itoa(pid1Port)}, io.Discard)
	if err != nil {
		log.Error("parse flags", "err", err)
		return 2
	}
	cfg.ListenHost = "127.0.0.1"
	cfg.BootRoot = root
	cfg.ReapOrphans = true
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// An orphan: sh exits at once, leaving its background sleep to PID 1.
	if _, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "sleep 1000 &"}, &syscall.ProcAttr{Env: []string{"PATH=/usr/bin:/bin"}}); err != nil {
		log.Error("start orphan maker", "err", err)
		return 1
	}
	err = daemon.Run(ctx, cfg, daemon.Build{Version: "0.0.0-test"}, log)
	log.Info("exited", "err", err)
	if err != nil {
		return 1
	}
	return 0
}

func TestNotPID1MountsNothing(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("the test binary itself runs as PID 1")
	}
	root := t.TempDir()
	if err := (boot.Boot{Root: root, Log: slog.New(slog.DiscardHandler)}).IfPID1(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("boot as non-PID-1 created %v", entries)
	}
}

func TestStepsTable(t *testing.T) {
	var names []string
	for _, s := range (boot.Boot{Root: "/", Log: slog.New(slog.DiscardHandler)}).Steps() {
		if s.Name == "" || s.Done == nil || s.Do == nil {
			t.Errorf("incomplete step %+v", s)
		}
		names = append(names, s.Name)
	}
	// Order matters: /dev/pts and /dev/shm need /dev, cgroup2 needs /sys.
	for _, pair := range [][2]string{{"mount /dev", "mount /dev/pts"}, {"mount /dev", "mount /dev/shm"}, {"mount /sys", "mount /sys/fs/cgroup"}, {"mount /proc", boot.CtrlAltDelStep}} {
		a, b := slices.Index(names, pair[0]), slices.Index(names, pair[1])
		if a < 0 || b < 0 || a > b {
			t.Errorf("step %q must come before %q: %v", pair[0], pair[1], names)
		}
	}
}

// logLines collects the JSON log lines of the PID-1 process.
type logLines struct {
	mu    sync.Mutex
	lines []map[string]any
	raw   []string
}

func (l *logLines) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var m map[string]any
		_ = json.Unmarshal(sc.Bytes(), &m)
		l.mu.Lock()
		l.lines = append(l.lines, m)
		l.raw = append(l.raw, sc.Text())
		l.mu.Unlock()
	}
}

// index is the position of the first line with msg (and step, if given).
func (l *logLines) index(msg, step string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, m := range l.lines {
		if m["msg"] == msg && (step == "" || m["step"] == step) {
			return i
		}
	}
	return -1
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.raw, "\n")
}

// mounts maps mount point to filesystem type from a mountinfo file.
func mounts(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for line := range strings.Lines(string(b)) {
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 {
			continue
		}
		out[f[4]] = strings.Fields(post)[0]
	}
	return out
}

// children lists the host pids whose parent is ppid.
func children(ppid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", ppid, ppid))
	var out []int
	for f := range strings.FieldsSeq(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// nsPid is a host pid's pid inside its own PID namespace (last NSpid field).
func nsPid(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// TestPID1 runs the daemon as PID 1 of new PID, mount and network
// namespaces, with the boot root in a fresh directory: the steps mount into
// it, loopback comes up, an orphan is reaped and SIGTERM ends in order.
func TestPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create PID, mount and network namespaces")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux) to become PID 1 of a new PID namespace")
	}
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh and sleep for the orphan")
	}
	root := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The sysctl is global; the Ctrl-Alt-Del step must leave the host's alone.
	cadBefore, err := os.ReadFile("/proc/sys/kernel/ctrl-alt-del")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount", "--propagation", "private", "--net", exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), pid1Env+"="+root)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := &logLines{}
	readDone := make(chan struct{})
	go func() { logs.read(stdout); close(readDone) }()
	var pid1 int
	t.Cleanup(func() {
		if pid1 != 0 {
			syscall.Kill(pid1, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("PID 1 log:\n%s", logs)
		}
	})
	testkit.Eventually(t, "unshare to fork PID 1", func() bool {
		c := children(cmd.Process.Pid)
		if len(c) == 1 {
			pid1 = c[0]
		}
		return pid1 != 0
	})
	if n := nsPid(pid1); n != 1 {
		t.Fatalf("child of unshare has pid %d in its namespace, want 1", n)
	}
	testkit.Eventually(t, "envd listening", func() bool { return logs.index("envd listening", "") >= 0 })

	// Every step mounted into the boot root, inside the namespace only.
	got := mounts(t, fmt.Sprintf("/proc/%d/mountinfo", pid1))
	for dir, fstype := range map[string]string{
		"/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs", "/dev/pts": "devpts",
		"/dev/shm": "tmpfs", "/sys/fs/cgroup": "cgroup2", "/tmp": "tmpfs",
	} {
		if got[filepath.Join(root, dir)] != fstype {
			t.Errorf("%s in PID 1's namespace: %q, want %s", dir, got[filepath.Join(root, dir)], fstype)
		}
		step := "mount " + dir
		if logs.index("boot step done", step) < 0 {
			t.Errorf("no log of boot step %q done", step)
		}
	}
	for mp := range mounts(t, "/proc/self/mountinfo") {
		if strings.HasPrefix(mp, root) {
			t.Errorf("boot mount %s leaked into the test's mount namespace", mp)
		}
	}
	if logs.index("boot step done", "bring up lo") < 0 {
		t.Error("no log of bringing lo up in the new network namespace")
	}
	// PID 1 of a PID namespace cannot take Ctrl-Alt-Del from the machine's
	// init: the kernel refuses (the VM check "shutdown" covers a real init),
	// unless the host already routes it to its init as SIGINT.
	if string(cadBefore) != "0\n" {
		if i := logs.index("boot step failed", boot.CtrlAltDelStep); i < 0 || !strings.Contains(logs.lines[i]["err"].(string), "not the init") {
			t.Errorf("step %q in a PID namespace: want it failed as not the machine's init; log:\n%s", boot.CtrlAltDelStep, logs)
		}
	}
	// The open-file limit is raised for PID 1 alone, where the capability
	// allows (this host's sandbox may withhold CAP_SYS_RESOURCE).
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid1))
	if err != nil {
		t.Fatal(err)
	}
	nrOpen, _ := os.ReadFile("/proc/sys/fs/nr_open")
	want := min(mustAtoi(t, strings.TrimSpace(string(nrOpen))), 1<<20)
	var soft, hard int
	for line := range strings.Lines(string(limits)) {
		if f := strings.Fields(line); strings.HasPrefix(line, "Max open files") && len(f) >= 5 {
			soft, hard = mustAtoi(t, f[3]), mustAtoi(t, f[4])
		}
	}
	if testkit.HasCapSysResource(t) {
		if soft != want || hard != want || logs.index("boot step done", boot.NoFileStep) < 0 {
			t.Errorf("PID 1 open-file limit %d/%d, want %d/%d with step %q done", soft, hard, want, want, boot.NoFileStep)
		}
	} else if i := logs.index("boot step failed", boot.NoFileStep); i < 0 && soft < want {
		t.Errorf("PID 1 open-file limit %d/%d below %d, and no failed step %q logged", soft, hard, want, boot.NoFileStep)
	}
	if cadAfter, _ := os.ReadFile("/proc/sys/kernel/ctrl-alt-del"); string(cadAfter) != string(cadBefore) {
		t.Errorf("host ctrl-alt-del sysctl changed from %q to %q", cadBefore, cadAfter)
	}

	// Loopback is up: the daemon answers on 127.0.0.1 inside the namespace.
	nsNet := fmt.Sprintf("/proc/%d/ns/net", pid1)
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return testkit.DialIn(nsNet, addr) },
	}}
	base := "http://127.0.0.1:" + strconv.Itoa(pid1Port)
	resp, err := hc.Get(base + "/health")
	if err != nil {
		t.Fatalf("health inside the namespace: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("health = %d", resp.StatusCode)
	}

	// A stream that SIGTERM must end, with its process.
	pc := processconnect.NewProcessClient(hc, base)
	stream, err := pc.Start(context.Background(), &process.StartRequest{Process: &process.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "exec sleep 999"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("start stream: %v", stream.Err())
	}
	started := int(stream.Msg().GetEvent().GetStart().GetPid())
	if started == 0 {
		t.Fatalf("first event %v is not a start event", stream.Msg())
	}

	// The orphan: a sleep whose parent sh has exited, now a child of PID 1.
	var orphan int
	testkit.Eventually(t, "the orphaned sleep to be reparented to PID 1", func() bool {
		for _, c := range children(pid1) {
			if comm(c) == "sleep" && nsPid(c) != started {
				orphan = c
				return true
			}
		}
		return false
	})
	if err := syscall.Kill(orphan, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the killed orphan to be reaped (gone, not a zombie)", func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", orphan))
		return os.IsNotExist(err)
	})

	if err := syscall.Kill(pid1, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	streamEnded := make(chan struct{})
	go func() {
		for stream.Receive() {
		}
		close(streamEnded)
	}()
	select {
	case <-streamEnded:
	case <-time.After(30 * time.Second):
		t.Fatal("stream still open after SIGTERM")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("PID 1 exit: %v", err)
	}
	<-readDone
	pid1 = 0
	order := []string{
		"shutdown: stop accepting, end streams",
		"shutdown: streams ended",
		"shutdown: process groups signalled",
		"shutdown: filesystems synced",
		"exited",
	}
	last := -1
	for _, msg := range order {
		i := logs.index(msg, "")
		if i <= last {
			t.Fatalf("shutdown log %q at %d, after %d: want the order %v", msg, i, last, order)
		}
		last = i
	}
}
