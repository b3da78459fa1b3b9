package volumes_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/reaper"
	"github.com/envd-dev/envd/internal/volumes"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// namespace is a private mount namespace held open by a sleeping process:
// every command the Mounter runs enters it with nsenter, so nothing is
// mounted on the machine running the tests.
type namespace struct {
	pid  int
	base volumes.Runner
	mu   sync.Mutex
	ran  [][]string
}

func newNamespace(t *testing.T) *namespace {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a mount namespace and mounts in it")
	}
	for _, bin := range []string{"unshare", "nsenter", "findmnt", "mount", "umount"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s missing (scripts/install-deps installs util-linux): %v", bin, err)
		}
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", "echo ready; exec sleep infinity")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("namespace holder: %q %v", line, err)
	}
	r, err := reaper.New(discard, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &namespace{pid: cmd.Process.Pid, base: volumes.Command(r)}
}

// run is the Mounter's Runner: the real command, inside the namespace.
func (ns *namespace) run(ctx context.Context, argv []string) ([]byte, error) {
	ns.mu.Lock()
	ns.ran = append(ns.ran, argv)
	ns.mu.Unlock()
	return ns.base(ctx, append([]string{"nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", ns.pid), "--"}, argv...))
}

// commands returns the names of the commands run since the last call.
func (ns *namespace) commands() string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	var names []string
	for _, a := range ns.ran {
		names = append(names, strings.Join(a[:min(2, len(a))], " "))
	}
	ns.ran = nil
	return strings.Join(names, ", ")
}

type mountInfo struct{ id, source, fstype string }

// mounts lists what is mounted exactly at path inside the namespace, from
// the kernel's own table, lowest first.
func (ns *namespace) mounts(t *testing.T, path string) []mountInfo {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", ns.pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []mountInfo
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || len(f) < sep+3 || f[4] != path {
			continue
		}
		out = append(out, mountInfo{id: f[0], fstype: f[sep+1], source: f[sep+2]})
	}
	return out
}

// tmpfsMounter runs the real mount, findmnt and umount with tmpfs standing
// in for NFS, which this kernel may lack: the source is any string for
// tmpfs, so findmnt reports it as it would an NFS export.
func tmpfsMounter(ns *namespace) *volumes.Mounter {
	m := volumes.New(ns.run, discard)
	m.FSType, m.Options = "tmpfs", "size=1m"
	return m
}

func TestSameLifecycleMountsOnce(t *testing.T) {
	ns := newNamespace(t)
	m := tmpfsMounter(ns)
	p := filepath.Join(t.TempDir(), "vol", "a")
	vols := []volumes.Volume{{Target: "10.0.0.1:/vol-a", Path: p}}
	if err := m.MountAll(context.Background(), vols, "L1"); err != nil {
		t.Fatal(err)
	}
	if got := ns.commands(); got != "findmnt --noheadings, mount -v" {
		t.Fatalf("first mount ran %q", got)
	}
	first := ns.mounts(t, p)
	if len(first) != 1 || first[0].source != "10.0.0.1:/vol-a" || first[0].fstype != "tmpfs" {
		t.Fatalf("after the first /init: %+v", first)
	}
	for range 3 {
		if err := m.MountAll(context.Background(), vols, "L1"); err != nil {
			t.Fatal(err)
		}
	}
	if got := ns.commands(); got != "" {
		t.Fatalf("same lifecycle ran %q, want nothing", got)
	}
	if again := ns.mounts(t, p); !slices.Equal(again, first) {
		t.Fatalf("same lifecycle changed the mount: %+v → %+v", first, again)
	}
	if l := m.Ledger(); len(l) != 1 || l[p] != "L1" {
		t.Fatalf("ledger %v", l)
	}
}

func TestNewLifecycleRemounts(t *testing.T) {
	ns := newNamespace(t)
	m := tmpfsMounter(ns)
	p := filepath.Join(t.TempDir(), "a")
	vols := []volumes.Volume{{Target: "10.0.0.1:/vol-a", Path: p}}
	if err := m.MountAll(context.Background(), vols, "L1"); err != nil {
		t.Fatal(err)
	}
	// Mount ids are reused at once; a file in the old tmpfs tells them apart.
	if out, err := ns.run(context.Background(), []string{"touch", p + "/old-lifecycle"}); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ns.commands()
	if err := m.MountAll(context.Background(), vols, "L2"); err != nil {
		t.Fatal(err)
	}
	if got := ns.commands(); got != "findmnt --noheadings, umount --force, mount -v" {
		t.Fatalf("new lifecycle ran %q", got)
	}
	second := ns.mounts(t, p)
	if len(second) != 1 || second[0].source != "10.0.0.1:/vol-a" {
		t.Fatalf("want exactly one mount, got %+v", second)
	}
	if _, err := ns.run(context.Background(), []string{"test", "-e", p + "/old-lifecycle"}); err == nil {
		t.Fatal("the old lifecycle's mount is still the one at the path")
	}
	ns.commands()
	if l := m.Ledger(); l[p] != "L2" {
		t.Fatalf("ledger %v", l)
	}
	// An empty lifecycleID is a key like any other: "" then "" skips.
	if err := m.MountAll(context.Background(), vols, ""); err != nil {
		t.Fatal(err)
	}
	ns.commands()
	if err := m.MountAll(context.Background(), vols, ""); err != nil || ns.commands() != "" {
		t.Fatal("empty lifecycle twice must mount once", err)
	}
}

// A path mounted by something else (or by an envd before a restart, whose
// ledger is gone) is unmounted first, never stacked over.
func TestForeignMountIsReplaced(t *testing.T) {
	ns := newNamespace(t)
	m := tmpfsMounter(ns)
	p := filepath.Join(t.TempDir(), "a")
	os.MkdirAll(p, 0o755)
	if out, err := ns.run(context.Background(), []string{"mount", "-t", "tmpfs", "old:/x", p}); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ns.commands()
	if err := m.MountAll(context.Background(), []volumes.Volume{{Target: "new:/y", Path: p + "/"}}, "L"); err != nil {
		t.Fatal(err)
	}
	if got := ns.commands(); got != "findmnt --noheadings, umount --force, mount -v" {
		t.Fatalf("ran %q", got)
	}
	if got := ns.mounts(t, p); len(got) != 1 || got[0].source != "new:/y" {
		t.Fatalf("mounts %+v", got)
	}
}

func TestOtherPathsUntouched(t *testing.T) {
	ns := newNamespace(t)
	m := tmpfsMounter(ns)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := m.MountAll(context.Background(), []volumes.Volume{{Target: "s:/a", Path: a}}, "L1"); err != nil {
		t.Fatal(err)
	}
	before := ns.mounts(t, a)
	if err := m.MountAll(context.Background(), []volumes.Volume{{Target: "s:/b", Path: b}}, "L2"); err != nil {
		t.Fatal(err)
	}
	if got := ns.mounts(t, a); !slices.Equal(got, before) {
		t.Fatalf("a changed: %+v → %+v", before, got)
	}
	if l := m.Ledger(); l[a] != "L1" || l[b] != "L2" {
		t.Fatalf("ledger %v", l)
	}
	ns.commands()
	if err := m.MountAll(context.Background(), nil, "L3"); err != nil || ns.commands() != "" {
		t.Fatalf("no volumes: %v", err)
	}
}

func TestLedgerRestore(t *testing.T) {
	ns := newNamespace(t)
	m := tmpfsMounter(ns)
	p := filepath.Join(t.TempDir(), "a")
	m.Restore(map[string]string{p: "L1"})
	if err := m.MountAll(context.Background(), []volumes.Volume{{Target: "s:/a", Path: p}}, "L1"); err != nil || ns.commands() != "" {
		t.Fatalf("a handed-over ledger entry must skip the mount: %v", err)
	}
}

// The real NFS helper refuses a malformed export; the error carries the
// command line and the helper's own words, as §18.6 spells out.
func TestMountFailureMessage(t *testing.T) {
	ns := newNamespace(t)
	if _, err := os.Stat("/sbin/mount.nfs"); err != nil {
		t.Fatal("mount.nfs missing (scripts/install-deps installs nfs-common):", err)
	}
	m := volumes.New(ns.run, discard)
	p := filepath.Join(t.TempDir(), "a")
	err := m.MountAll(context.Background(), []volumes.Volume{{Target: "no-colon", Path: p}}, "L")
	want := fmt.Sprintf("failed to mount NFS at %q: `mount -v -t nfs -o %s no-colon %s` failed: exit status 32\n", p, volumes.Options, p)
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "remote share not in 'host:dir' format") {
		t.Fatalf("got %v\nwant prefix %q and mount.nfs's message", err, want)
	}
	if l := m.Ledger(); len(l) != 0 {
		t.Fatalf("a failed mount entered the ledger: %v", l)
	}
	if got := ns.mounts(t, p); len(got) != 0 {
		t.Fatalf("mounted anyway: %+v", got)
	}
}

// One failing volume cancels the others; a mount that would retry for
// minutes is killed rather than waited for.
func TestFirstFailureCancelsTheRest(t *testing.T) {
	ns := newNamespace(t)
	m := volumes.New(ns.run, discard)
	dir := t.TempDir()
	// fg,hard against a port with no NFS server: mount.nfs retries for minutes.
	err := m.MountAll(context.Background(), []volumes.Volume{
		{Target: "127.0.0.1:/envd-test-no-such-export", Path: filepath.Join(dir, "hangs")},
		{Target: "no-colon", Path: filepath.Join(dir, "fails")},
	}, "L")
	if err == nil || !strings.Contains(err.Error(), "remote share not in 'host:dir' format") {
		t.Fatalf("want the fast failure, got %v", err)
	}
}

func TestBudgetKillsAHungMount(t *testing.T) {
	ns := newNamespace(t)
	m := volumes.New(ns.run, discard)
	m.Budget = 200 * time.Millisecond
	p := filepath.Join(t.TempDir(), "hangs")
	err := m.MountAll(context.Background(), []volumes.Volume{{Target: "127.0.0.1:/envd-test-no-such-export", Path: p}}, "L")
	if err == nil || !strings.Contains(err.Error(), "volume mount budget exhausted") || !strings.Contains(err.Error(), "killed by signal killed") {
		t.Fatalf("got %v", err)
	}
}

// The budget is detached from the caller: an /init attempt abandoned by the
// orchestrator still completes the mount its retry finds in the ledger.
func TestCancelledCallerStillMounts(t *testing.T) {
	ns := newNamespace(t)
	m := tmpfsMounter(ns)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := filepath.Join(t.TempDir(), "a")
	if err := m.MountAll(ctx, []volumes.Volume{{Target: "s:/a", Path: p}}, "L"); err != nil {
		t.Fatal(err)
	}
	if got := ns.mounts(t, p); len(got) != 1 {
		t.Fatalf("mounts %+v", got)
	}
}

func TestInvalidVolumes(t *testing.T) {
	m := volumes.New(func(context.Context, []string) ([]byte, error) {
		t.Fatal("nothing may run for an invalid request")
		return nil, nil
	}, discard)
	for _, vols := range [][]volumes.Volume{
		{{Target: "", Path: "/mnt/a"}},
		{{Target: "s:/a", Path: ""}},
		{{Target: "s:/a", Path: "relative"}},
		{{Target: "-oremount", Path: "/mnt/a"}},
		{{Target: "s:/a", Path: "/mnt/a\x00"}},
		{{Target: "s:/a", Path: "/mnt/a"}, {Target: "s:/b", Path: "/mnt/a/"}},
	} {
		if err := m.MountAll(context.Background(), vols, "L"); err == nil || !strings.Contains(err.Error(), "invalid volume mount") {
			t.Errorf("%+v: %v", vols, err)
		}
	}
}

func TestCommandRunner(t *testing.T) {
	ns := newNamespace(t)
	out, err := ns.base(context.Background(), []string{"sh", "-c", "echo out; echo err >&2; exit 3"})
	var exit *volumes.ExitError
	if string(out) != "out\nerr\n" || !errors.As(err, &exit) || exit.Code != 3 {
		t.Fatalf("%q %v", out, err)
	}
	if _, err := ns.base(context.Background(), []string{"envd-no-such-command"}); err == nil || !strings.Contains(err.Error(), "command not found") {
		t.Fatalf("missing command: %v", err)
	}
	// A background child holding the output pipe does not hold the caller.
	out, err = ns.base(context.Background(), []string{"sh", "-c", "sleep 2 & echo started"})
	if err != nil || string(out) != "started\n" {
		t.Fatalf("%q %v", out, err)
	}
}
