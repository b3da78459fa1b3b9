package testkit

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"strings"
	"testing"
	"time"
)

// uniqueName is prefix plus 10 random characters, so test binaries that run
// at the same time never pick the same account.
func uniqueName(prefix string) string {
	return prefix + strings.ToLower(rand.Text()[:10])
}

// AddUser creates a real account for the test, with a home directory and a
// group of its own, and removes both after it; extra goes to useradd (e.g.
// "--shell", "/bin/sh"). The name is prefix plus random characters. Skips
// when not root.
func AddUser(t testing.TB, prefix string, extra ...string) *user.User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating users needs root")
	}
	name := uniqueName(prefix)
	Passwd(t, "useradd", append(append([]string{"--create-home", "--user-group"}, extra...), name)...)
	t.Cleanup(func() { cleanupPasswd(t, "userdel", "--remove", name) })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// AddGroup creates a group for the test and removes it after it. Skips when
// not root.
func AddGroup(t testing.TB, prefix string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating groups needs root")
	}
	name := uniqueName(prefix)
	Passwd(t, "groupadd", name)
	t.Cleanup(func() { cleanupPasswd(t, "groupdel", name) })
	return name
}

// Passwd runs a command that edits the user database (useradd, usermod,
// groupadd, …). Test binaries of other packages run at the same time and
// also add users; the tool then fails to lock /etc/passwd or /etc/group, so
// that case is retried instead of failing the test.
func Passwd(t testing.TB, cmd string, args ...string) {
	t.Helper()
	if out, err := passwd(nil, cmd, args...); err != nil {
		t.Fatalf("%s %v: %v: %s", cmd, args, err, out)
	}
}

// cleanupPasswd removes what a test added. A test that renamed or removed it
// itself leaves nothing to remove (userdel and groupdel exit 6); anything else
// is logged, since it leaves an account behind.
func cleanupPasswd(t testing.TB, cmd string, args ...string) {
	var exit *exec.ExitError
	if out, err := passwd(nil, cmd, args...); err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 6) {
		t.Logf("cleanup %s %v: %v: %s", cmd, args, err, out)
	}
}

// passwd runs cmd until it does not fail for a lock held elsewhere ("cannot
// lock /etc/passwd; try again later"), for at most 10 s; busy, if set, is
// called after each such failure.
func passwd(busy func(), cmd string, args ...string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		out, err := exec.Command(cmd, args...).CombinedOutput()
		if err == nil || attempt >= 100 || !bytes.Contains(out, []byte("lock")) {
			return out, err
		}
		if busy != nil {
			busy()
		}
		time.Sleep(100 * time.Millisecond)
	}
}
