package testkit

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireXattrs skips when dir's filesystem has no user xattrs, the one
// legitimate reason metadata tests cannot run.
func RequireXattrs(t testing.TB, dir string) {
	t.Helper()
	probe := filepath.Join(dir, ".xattr-probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(probe)
	if err := unix.Setxattr(probe, "user.probe", []byte("1"), 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			t.Skipf("filesystem of %s has no user xattrs: %v", dir, err)
		}
		t.Fatal(err)
	}
}

// MaxQueuedEvents returns this machine's inotify queue limit, which overflow
// tests fill; it skips when the limit is above atMost, since filling it would
// take the test too long. Nothing global is changed.
func MaxQueuedEvents(t testing.TB, atMost int) int {
	t.Helper()
	raw, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Fatal(err)
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if limit > atMost {
		t.Skipf("max_queued_events is %d; filling it would make this test too slow", limit)
	}
	return limit
}

// HasCapSysResource reads CAP_SYS_RESOURCE (bit 24) from this process's
// CapEff: without it the kernel lets a process exceed limits it would
// otherwise enforce, which limit tests must know.
func HasCapSysResource(t testing.TB) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return caps&(1<<24) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}
