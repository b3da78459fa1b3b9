package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// parentMountNS, when set, marks the re-executed test binary that runs in a
// mount namespace of its own; it holds the parent's namespace, so the child
// can prove it is elsewhere before it mounts anything over /etc.
const parentMountNS = "ENVD_TESTKIT_PARENT_MNTNS"

// While another process holds the passwd lock, useradd fails at once with
// "cannot lock /etc/passwd"; the retry waits the lock out. The lock is real
// (/etc/passwd.lock naming a live process, as shadow's own tools leave it),
// on a copy of /etc bound over /etc in a private mount namespace, so the
// machine's user database is never locked or changed.
func TestUserdbRetriesWhileAnotherProcessHoldsTheLock(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating users and mount namespaces needs root")
	}
	if parent := os.Getenv(parentMountNS); parent != "" {
		lockedUseradd(t, parent)
		return
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("needs useradd (passwd package)")
	}
	ns, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), parentMountNS+"="+ns)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("child in its own mount namespace: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

func lockedUseradd(t *testing.T, parentNS string) {
	ns, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil || ns == parentNS {
		t.Fatalf("not in a mount namespace of its own (%q, %v): refusing to touch /etc", ns, err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	etc := t.TempDir()
	if out, err := exec.Command("cp", "-a", "/etc/.", etc).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc: %v: %s", err, out)
	}
	marker := filepath.Join(etc, ".testkit-private-copy")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(etc, "/etc", "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/etc/.testkit-private-copy"); err != nil {
		t.Fatalf("/etc is not the private copy: %v", err)
	}

	holder := exec.Command("sleep", "1000")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Process.Kill()
	lock, err := os.OpenFile("/etc/passwd.lock", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	lock.WriteString(strconv.Itoa(holder.Process.Pid)) // shadow reads the pid without a newline
	lock.Close()

	busy := 0
	out, err := passwd(func() {
		// The other process is done: its lock is now stale, which shadow
		// clears by itself.
		if busy++; busy == 1 {
			holder.Process.Kill()
			holder.Wait()
		}
	}, "useradd", "--no-create-home", "testkitlock")
	if err != nil {
		t.Fatalf("useradd after the lock was released: %v: %s", err, out)
	}
	if busy == 0 {
		t.Fatal("useradd never met the lock: the test proved nothing")
	}
	b, err := os.ReadFile("/etc/passwd")
	if err != nil || !strings.Contains(string(b), "\ntestkitlock:") {
		t.Fatalf("testkitlock not in the private /etc/passwd (%v)", err)
	}
}
