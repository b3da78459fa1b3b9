package testkit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// CgroupMount is this host's writable cgroup2 mount, where cgroup tests make
// their own directories.
const CgroupMount = "/sys/fs/cgroup/unified"

// RequireCgroup2 skips unless the test runs as root on a machine with a
// cgroup2 mount at CgroupMount, the two things creating test cgroups needs.
// It reads the filesystem magic itself rather than through internal/cgroup,
// so that testkit stays free of envd packages.
func RequireCgroup2(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	var st unix.Statfs_t
	err := unix.Statfs(CgroupMount, &st)
	if err != nil {
		err = fmt.Errorf("statfs cgroup root: %w", err)
	} else if st.Type != unix.CGROUP2_SUPER_MAGIC {
		err = fmt.Errorf("%s is not a cgroup2 filesystem (magic %#x)", CgroupMount, st.Type)
	}
	if err != nil {
		t.Skipf("needs a cgroup2 mount at %s: %v", CgroupMount, err)
	}
}

// CgroupDir makes a fresh directory of the cgroup2 mount, named prefix and
// a random suffix, and removes it with everything below it when the test
// ends. It skips as RequireCgroup2 does.
func CgroupDir(t testing.TB, prefix string) string {
	t.Helper()
	RequireCgroup2(t)
	root, err := os.MkdirTemp(CgroupMount, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { RemoveCgroupTree(t, root) })
	return root
}

// RemoveCgroupTree thaws, kills and removes a test cgroup tree, children
// first, since a cgroup directory can only go once it is empty.
func RemoveCgroupTree(t testing.TB, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			RemoveCgroupTree(t, filepath.Join(dir, e.Name()))
		}
	}
	_ = os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0)
	_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	for range 1000 {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(5 * time.Millisecond) // killed tasks leave the cgroup asynchronously
	}
	t.Errorf("could not remove test cgroup %s", dir)
}
