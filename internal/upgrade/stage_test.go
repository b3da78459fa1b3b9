package upgrade

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The body lands 0755 whatever the umask, replacing the previous file even
// while that one runs (an envd executing from the staging path upgrades
// again): unlinking first avoids ETXTBSY.
func TestStageReplacesARunningBinary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "envd.next")
	sleep, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := Stage(path, strings.NewReader(string(sleep))); err != nil {
		t.Fatal(err)
	}
	running := exec.Command(path, "1000")
	if err := running.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { running.Process.Kill(); running.Wait() }()
	old := syscall.Umask(0o077)
	err = Stage(path, strings.NewReader("new image"))
	syscall.Umask(old)
	if err != nil {
		t.Fatalf("stage over a running binary: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("staged %v %v", st, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new image" {
		t.Fatalf("staged content %q", b)
	}
	if err := running.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the running image was disturbed: %v", err)
	}
}

func TestStageUnwritable(t *testing.T) {
	if err := Stage(filepath.Join(t.TempDir(), "no", "such", "dir"), strings.NewReader("x")); err == nil {
		t.Fatal("staged into a missing directory")
	}
}
