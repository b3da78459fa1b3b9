package vm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listenBacklog is what ss reports as the Send-Q of the listener on
// 127.0.0.1:port: its accept backlog.
func listenBacklog(t *testing.T, port int) int {
	t.Helper()
	out, err := exec.Command("ss", "-ltnH", "src", "127.0.0.1:"+strconv.Itoa(port)).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	fields := strings.Fields(string(out))
	if len(fields) < 3 || fields[0] != "LISTEN" {
		t.Fatalf("no listener on 127.0.0.1:%d in ss output %q", port, out)
	}
	n, err := strconv.Atoi(fields[2])
	if err != nil {
		t.Fatalf("ss Send-Q %q: %v", fields[2], err)
	}
	return n
}

// The listener of a real qemu's hostfwd, in a qemu with no machine: slirp's
// backlog of 1 is what reset the SDK's bursts of uploads in the VM.
func TestWidenHostfwdBacklog(t *testing.T) {
	qemu, err := QemuBinary()
	if err != nil {
		t.Skip(err.Error())
	}
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss not found: apt-get install iproute2 (or run scripts/install-deps)")
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(qemu, "-M", "none", "-nodefaults", "-display", "none", "-S",
		"-netdev", "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:"+strconv.Itoa(port)+"-"+GuestIP+":"+strconv.Itoa(EnvdPort),
		"-qmp", "unix:"+sock+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	q, err := DialQMP(sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()

	before := listenBacklog(t, port)
	t.Logf("qemu's own backlog on its hostfwd socket: %d", before)
	if err := widenBacklog(cmd.Process.Pid, port); err != nil {
		t.Fatal(err)
	}
	want := hostfwdBacklog
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && max < want {
			want = max
		}
	}
	if got := listenBacklog(t, port); got != want {
		t.Errorf("backlog after widenBacklog = %d, want %d (was %d)", got, want, before)
	}

	// Another port of the same qemu is not a listener of it: a clear error,
	// and the real one is untouched.
	other, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if err := widenBacklog(cmd.Process.Pid, other); err == nil || !strings.Contains(err.Error(), "no listener") {
		t.Errorf("widenBacklog on a port qemu does not listen on: %v, want a no-listener error", err)
	}
	if got := listenBacklog(t, port); got != want {
		t.Errorf("backlog changed by the failed call: %d, want %d", got, want)
	}
}
