// Package volumestest runs volumes' real commands inside a private mount
// namespace, so tests mount for real without touching the machine's mounts.
package volumestest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/envd-dev/envd/internal/reaper"
	"github.com/envd-dev/envd/internal/volumes"
)

// Namespace is a private mount namespace held open by a sleeping process.
type Namespace struct {
	Pid int
	// Base runs a command outside the namespace, through a real reaper.
	Base volumes.Runner

	mu  sync.Mutex
	ran [][]string
	// Before, when set, is called with each command before it runs.
	Before func(argv []string)
}

// New creates the namespace; it ends with the test. It needs root.
func New(t testing.TB) *Namespace {
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
	r, err := reaper.New(slog.New(slog.NewTextHandler(io.Discard, nil)), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &Namespace{Pid: cmd.Process.Pid, Base: volumes.Command(r)}
}

// Run is a volumes.Runner: the real command, inside the namespace.
func (ns *Namespace) Run(ctx context.Context, argv []string) ([]byte, error) {
	ns.mu.Lock()
	ns.ran = append(ns.ran, argv)
	before := ns.Before
	ns.mu.Unlock()
	if before != nil {
		before(argv)
	}
	return ns.Base(ctx, append([]string{"nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", ns.Pid), "--"}, argv...))
}

// Commands returns the first two words of each command run since the last
// call, comma-separated.
func (ns *Namespace) Commands() string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	var names []string
	for _, a := range ns.ran {
		names = append(names, strings.Join(a[:min(2, len(a))], " "))
	}
	ns.ran = nil
	return strings.Join(names, ", ")
}

// Mount is one line of the namespace's mount table.
type Mount struct{ ID, Source, FSType string }

// Mounts lists what is mounted exactly at path inside the namespace, from
// the kernel's own table, lowest first.
func (ns *Namespace) Mounts(t testing.TB, path string) []Mount {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", ns.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []Mount
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || len(f) < sep+3 || f[4] != path {
			continue
		}
		out = append(out, Mount{ID: f[0], FSType: f[sep+1], Source: f[sep+2]})
	}
	return out
}

// TmpfsMounter runs the real mount, findmnt and umount in ns with tmpfs
// standing in for NFS, which this kernel may lack: tmpfs takes any string as
// its source, so findmnt reports it as it would an NFS export.
func TmpfsMounter(ns *Namespace) *volumes.Mounter {
	m := volumes.New(ns.Run, slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.FSType, m.Options = "tmpfs", "size=1m"
	return m
}
