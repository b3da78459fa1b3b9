package volumes_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/volumes"
	"github.com/envd-dev/envd/internal/volumes/volumestest"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestSameLifecycleMountsOnce(t *testing.T) {
	ns := volumestest.New(t)
	m := volumestest.TmpfsMounter(ns)
	p := filepath.Join(t.TempDir(), "vol", "a")
	vols := []volumes.Volume{{Target: "10.0.0.1:/vol-a", Path: p}}
	if err := m.MountAll(context.Background(), vols, "L1"); err != nil {
		t.Fatal(err)
	}
	if got := ns.Commands(); got != "findmnt --noheadings, mkdir -p, mount -v" {
		t.Fatalf("first mount ran %q", got)
	}
	first := ns.Mounts(t, p)
	if len(first) != 1 || first[0].Source != "10.0.0.1:/vol-a" || first[0].FSType != "tmpfs" {
		t.Fatalf("after the first /init: %+v", first)
	}
	for range 3 {
		if err := m.MountAll(context.Background(), vols, "L1"); err != nil {
			t.Fatal(err)
		}
	}
	if got := ns.Commands(); got != "" {
		t.Fatalf("same lifecycle ran %q, want nothing", got)
	}
	if again := ns.Mounts(t, p); !slices.Equal(again, first) {
		t.Fatalf("same lifecycle changed the mount: %+v → %+v", first, again)
	}
	if l := m.Ledger(); len(l) != 1 || l[p] != "L1" {
		t.Fatalf("ledger %v", l)
	}
}

func TestNewLifecycleRemounts(t *testing.T) {
	ns := volumestest.New(t)
	m := volumestest.TmpfsMounter(ns)
	p := filepath.Join(t.TempDir(), "a")
	vols := []volumes.Volume{{Target: "10.0.0.1:/vol-a", Path: p}}
	if err := m.MountAll(context.Background(), vols, "L1"); err != nil {
		t.Fatal(err)
	}
	// Mount ids are reused at once; a file in the old tmpfs tells them apart.
	if out, err := ns.Run(context.Background(), []string{"touch", p + "/old-lifecycle"}); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ns.Commands()
	if err := m.MountAll(context.Background(), vols, "L2"); err != nil {
		t.Fatal(err)
	}
	if got := ns.Commands(); got != "findmnt --noheadings, umount --force, mkdir -p, mount -v" {
		t.Fatalf("new lifecycle ran %q", got)
	}
	second := ns.Mounts(t, p)
	if len(second) != 1 || second[0].Source != "10.0.0.1:/vol-a" {
		t.Fatalf("want exactly one mount, got %+v", second)
	}
	if _, err := ns.Run(context.Background(), []string{"test", "-e", p + "/old-lifecycle"}); err == nil {
		t.Fatal("the old lifecycle's mount is still the one at the path")
	}
	ns.Commands()
	if l := m.Ledger(); l[p] != "L2" {
		t.Fatalf("ledger %v", l)
	}
	// An empty lifecycleID is a key like any other: "" then "" skips.
	if err := m.MountAll(context.Background(), vols, ""); err != nil {
		t.Fatal(err)
	}
	ns.Commands()
	if err := m.MountAll(context.Background(), vols, ""); err != nil || ns.Commands() != "" {
		t.Fatal("empty lifecycle twice must mount once", err)
	}
}

// A path mounted by something else (or by an envd before a restart, whose
// ledger is gone) is unmounted first, never stacked over.
func TestForeignMountIsReplaced(t *testing.T) {
	ns := volumestest.New(t)
	m := volumestest.TmpfsMounter(ns)
	p := filepath.Join(t.TempDir(), "a")
	os.MkdirAll(p, 0o755)
	if out, err := ns.Run(context.Background(), []string{"mount", "-t", "tmpfs", "old:/x", p}); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ns.Commands()
	if err := m.MountAll(context.Background(), []volumes.Volume{{Target: "new:/y", Path: p + "/"}}, "L"); err != nil {
		t.Fatal(err)
	}
	if got := ns.Commands(); got != "findmnt --noheadings, umount --force, mkdir -p, mount -v" {
		t.Fatalf("ran %q", got)
	}
	if got := ns.Mounts(t, p); len(got) != 1 || got[0].Source != "new:/y" {
		t.Fatalf("mounts %+v", got)
	}
}

func TestOtherPathsUntouched(t *testing.T) {
	ns := volumestest.New(t)
	m := volumestest.TmpfsMounter(ns)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := m.MountAll(context.Background(), []volumes.Volume{{Target: "s:/a", Path: a}}, "L1"); err != nil {
		t.Fatal(err)
	}
	before := ns.Mounts(t, a)
	if err := m.MountAll(context.Background(), []volumes.Volume{{Target: "s:/b", Path: b}}, "L2"); err != nil {
		t.Fatal(err)
	}
	if got := ns.Mounts(t, a); !slices.Equal(got, before) {
		t.Fatalf("a changed: %+v → %+v", before, got)
	}
	if l := m.Ledger(); l[a] != "L1" || l[b] != "L2" {
		t.Fatalf("ledger %v", l)
	}
	ns.Commands()
	if err := m.MountAll(context.Background(), nil, "L3"); err != nil || ns.Commands() != "" {
		t.Fatalf("no volumes: %v", err)
	}
}

func TestLedgerRestore(t *testing.T) {
	ns := volumestest.New(t)
	m := volumestest.TmpfsMounter(ns)
	p := filepath.Join(t.TempDir(), "a")
	m.Restore(map[string]string{p: "L1"})
	if err := m.MountAll(context.Background(), []volumes.Volume{{Target: "s:/a", Path: p}}, "L1"); err != nil || ns.Commands() != "" {
		t.Fatalf("a handed-over ledger entry must skip the mount: %v", err)
	}
}

// The real NFS helper refuses a malformed export; the error carries the
// command line and the helper's own words, as §18.6 spells out.
func TestMountFailureMessage(t *testing.T) {
	ns := volumestest.New(t)
	if _, err := os.Stat("/sbin/mount.nfs"); err != nil {
		t.Fatal("mount.nfs missing (scripts/install-deps installs nfs-common):", err)
	}
	m := volumes.New(ns.Run, discard)
	p := filepath.Join(t.TempDir(), "a")
	err := m.MountAll(context.Background(), []volumes.Volume{{Target: "no-colon", Path: p}}, "L")
	want := fmt.Sprintf("failed to mount NFS at %q: `mount -v -t nfs -o %s no-colon %s` failed: exit status 32\n", p, volumes.Options, p)
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "remote share not in 'host:dir' format") {
		t.Fatalf("got %v\nwant prefix %q and mount.nfs's message", err, want)
	}
	if l := m.Ledger(); len(l) != 0 {
		t.Fatalf("a failed mount entered the ledger: %v", l)
	}
	if got := ns.Mounts(t, p); len(got) != 0 {
		t.Fatalf("mounted anyway: %+v", got)
	}
}

// One failing volume cancels the others; a mount that would retry for
// minutes is killed rather than waited for.
func TestFirstFailureCancelsTheRest(t *testing.T) {
	ns := volumestest.New(t)
	m := volumes.New(ns.Run, discard)
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
	ns := volumestest.New(t)
	m := volumes.New(ns.Run, discard)
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
	ns := volumestest.New(t)
	m := volumestest.TmpfsMounter(ns)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := filepath.Join(t.TempDir(), "a")
	if err := m.MountAll(ctx, []volumes.Volume{{Target: "s:/a", Path: p}}, "L"); err != nil {
		t.Fatal(err)
	}
	if got := ns.Mounts(t, p); len(got) != 1 {
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
	ns := volumestest.New(t)
	out, err := ns.Base(context.Background(), []string{"sh", "-c", "echo out; echo err >&2; exit 3"})
	var exit *volumes.ExitError
	if string(out) != "out\nerr\n" || !errors.As(err, &exit) || exit.Code != 3 {
		t.Fatalf("%q %v", out, err)
	}
	if _, err := ns.Base(context.Background(), []string{"envd-no-such-command"}); err == nil || !strings.Contains(err.Error(), "command not found") {
		t.Fatalf("missing command: %v", err)
	}
	// A background child holding the output pipe does not hold the caller.
	out, err = ns.Base(context.Background(), []string{"sh", "-c", "sleep 2 & echo started"})
	if err != nil || string(out) != "started\n" {
		t.Fatalf("%q %v", out, err)
	}
}

// A volume inside another is mounted after it, whatever the request order,
// so the parent's mount does not hide it.
func TestNestedVolumesParentFirst(t *testing.T) {
	ns := volumestest.New(t)
	m := volumestest.TmpfsMounter(ns)
	parent := filepath.Join(t.TempDir(), "p")
	child := filepath.Join(parent, "c")
	err := m.MountAll(context.Background(), []volumes.Volume{{Target: "s:/child", Path: child}, {Target: "s:/parent", Path: parent}}, "L")
	if err != nil {
		t.Fatal(err)
	}
	if p, c := ns.Mounts(t, parent), ns.Mounts(t, child); len(p) != 1 || len(c) != 1 || c[0].Source != "s:/child" {
		t.Fatalf("parent %+v, child %+v", p, c)
	}
	// The child is visible: a file in it is on the child's tmpfs.
	if out, err := ns.Run(context.Background(), []string{"sh", "-c", "touch " + child + "/f && findmnt --noheadings --output SOURCE --target " + child + "/f"}); err != nil || string(out) != "s:/child\n" {
		t.Fatalf("%q %v", out, err)
	}
}
