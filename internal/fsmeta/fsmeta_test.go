package fsmeta

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/testkit"
)

func TestReplaceAndRead(t *testing.T) {
	dir := t.TempDir()
	testkit.RequireXattrs(t, dir)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.other", []byte("keep"), 0); err != nil {
		t.Fatal(err)
	}
	if err := Replace(p, map[string]string{"a": "1", "b": "two"}); err != nil {
		t.Fatal(err)
	}
	if err := Replace(p, map[string]string{"b": "2", "c": ""}); err != nil {
		t.Fatal(err)
	}
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"b": "2", "c": ""}; !maps.Equal(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
	// Attributes outside envd's namespace are not touched.
	if _, err := unix.Getxattr(p, "user.other", make([]byte, 8)); err != nil {
		t.Fatalf("user.other removed: %v", err)
	}
	// Non-UTF-8 values are skipped rather than sent as broken strings.
	if err := unix.Setxattr(p, Prefix+"bin", []byte{0xff, 0xfe}, 0); err != nil {
		t.Fatal(err)
	}
	got, _ = Read(p)
	if _, ok := got["bin"]; ok {
		t.Fatalf("non-UTF-8 value surfaced: %v", got)
	}
	// Rename keeps metadata, which Move relies on.
	q := filepath.Join(dir, "g")
	if err := os.Rename(p, q); err != nil {
		t.Fatal(err)
	}
	if got, _ := Read(q); got["b"] != "2" {
		t.Fatalf("after rename: %v", got)
	}
}

func TestReadMissingFile(t *testing.T) {
	if _, err := Read(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("want ENOENT, got %v", err)
	}
}

func TestListSizeAt(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"plain", "tagged"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := Replace(filepath.Join(dir, "tagged"), map[string]string{"k": "v"}); err != nil {
		if errors.Is(err, ErrUnsupported) {
			t.Skip("the test filesystem has no user xattrs")
		}
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	n, err := ListSizeAt(fd, "tagged")
	if errors.Is(err, unix.ENOSYS) {
		t.Skip("listxattrat(2) needs Linux 6.13")
	}
	if err != nil || n < len(Prefix+"k")+1 {
		t.Errorf("ListSizeAt(tagged) = %d, %v; want at least %d", n, err, len(Prefix+"k")+1)
	}
	if n, err := ListSizeAt(fd, "plain"); err != nil {
		t.Errorf("ListSizeAt(plain): %v", err)
	} else if n != 0 {
		// Some filesystems add security.* attributes to every file; then
		// the size is theirs, not user.e2b.*.
		names, _ := list(filepath.Join(dir, "plain"))
		if len(names) == 0 {
			t.Errorf("ListSizeAt(plain) = %d, want 0", n)
		}
	}
	if _, err := ListSizeAt(fd, "missing"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("ListSizeAt(missing): %v, want ENOENT", err)
	}
}
