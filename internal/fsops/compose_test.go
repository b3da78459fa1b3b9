package fsops_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envd-dev/envd/internal/fsops"
)

// A source that vanished after the check fails the copy: the destination
// stays, the sources before it stay, and no temporary file is left.
func TestComposeSourceVanished(t *testing.T) {
	dir := t.TempDir()
	a, dest := filepath.Join(dir, "a"), filepath.Join(dir, "dest")
	os.WriteFile(a, []byte("A"), 0o644)
	os.WriteFile(dest, []byte("keep"), 0o644)
	err := fsops.Compose([]string{a, filepath.Join(dir, "gone")}, dest, uint32(os.Getuid()), uint32(os.Getgid()))
	var ce *fsops.ComposeError
	if !errors.As(err, &ce) || ce.Source != filepath.Join(dir, "gone") || !errors.Is(err, fs.ErrNotExist) ||
		!strings.HasPrefix(err.Error(), "error composing source "+filepath.Join(dir, "gone")+": ") {
		t.Fatalf("got %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("entries %v", entries)
	}
	if b, _ := os.ReadFile(dest); string(b) != "keep" {
		t.Fatal("destination changed")
	}
	if _, err := os.Stat(a); err != nil {
		t.Fatal("a source was removed after a failure")
	}
}

func TestCheckComposeSource(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	os.WriteFile(f, nil, 0o644)
	os.Symlink(f, filepath.Join(dir, "l"))
	for p, want := range map[string]error{
		f:                          nil,
		filepath.Join(dir, "l"):    nil,
		dir:                        fsops.ErrSourceNotRegular,
		filepath.Join(dir, "none"): fsops.ErrSourceMissing,
		"/dev/null":                fsops.ErrSourceNotRegular,
	} {
		if err := fsops.CheckComposeSource(p); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", p, err, want)
		}
	}
}
