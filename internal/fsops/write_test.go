package fsops

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Only the Writer that made a temporary name recognises it, and it tells a
// replacement from a new file; names that merely look alike are not its.
func TestStagedNames(t *testing.T) {
	dir := t.TempDir()
	wr, other := NewWriter(slog.New(slog.DiscardHandler)), NewWriter(slog.New(slog.DiscardHandler))
	existing := filepath.Join(dir, "old.txt")
	if err := os.WriteFile(existing, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(dir, strings.Repeat("n", nameMax))
	for _, tc := range []struct {
		target   string
		replaces bool
	}{{filepath.Join(dir, "new.txt"), false}, {existing, true}, {long, false}} {
		f, err := wr.createTemp(tc.target, tc.replaces)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		name := filepath.Base(f.Name())
		if len(name) > nameMax {
			t.Fatalf("temporary name of %d bytes", len(name))
		}
		if replaces, ok := wr.Staged(name); !ok || replaces != tc.replaces {
			t.Errorf("Staged(%q) = %v, %v; want %v, true", name, replaces, ok, tc.replaces)
		}
		if _, ok := other.Staged(name); ok {
			t.Errorf("another Writer recognised %q", name)
		}
		// Flipping the kind letter breaks the tag.
		i := strings.LastIndex(name, tempMarker) + len(tempMarker)
		flipped := name[:i] + map[byte]string{kindNew: "r", kindReplace: "n"}[name[i]] + name[i+1:]
		if _, ok := wr.Staged(flipped); ok {
			t.Errorf("Staged(%q) accepted a forged kind", flipped)
		}
	}
	for _, name := range []string{"", ".", "f.txt", ".f.txt.envd-upload-", ".f.txt.envd-upload-n" + strings.Repeat("0", 32),
		".f.txt.envd-upload-x" + strings.Repeat("0", 32), ".f.txt.envd-upload-n" + strings.Repeat("z", 32)} {
		if _, ok := wr.Staged(name); ok {
			t.Errorf("Staged(%q) = true", name)
		}
	}
}
