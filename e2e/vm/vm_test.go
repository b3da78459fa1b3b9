package vm

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/mmds"
)

// A qemu with no machine answers QMP at once: the client is tested against
// the real protocol without booting a guest.
func TestQMPAgainstQemu(t *testing.T) {
	qemu, err := QemuBinary()
	if err != nil {
		t.Skip(err.Error())
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(qemu, "-M", "none", "-nodefaults", "-display", "none", "-S", "-qmp", "unix:"+sock+",server=on,wait=off")
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
	if st, err := q.Status(); err != nil || st != "prelaunch" {
		t.Errorf("Status of a qemu started with -S = %q, %v; want prelaunch", st, err)
	}
	if _, err := q.Execute("no-such-command", nil); err == nil || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Errorf("unknown command: %v, want CommandNotFound", err)
	}
	out, err := q.HMP("info version")
	if err != nil || !strings.Contains(out, ".") {
		t.Errorf("HMP info version = %q, %v", out, err)
	}
	if _, err := q.Execute("quit", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("qemu still running after QMP quit")
	}
}

// The host MMDS answers envd's own client, token first, as in the guest.
func TestServeMMDS(t *testing.T) {
	m, err := ServeMMDS(map[string]any{"instanceID": "i-1", "envID": "e-1", "accessTokenHash": TokenHash("tok")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := &mmds.Client{BaseURL: "http://127.0.0.1:" + strconv.Itoa(m.Port), HTTP: &http.Client{Timeout: 5 * time.Second}}
	md, err := c.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if md.InstanceID != "i-1" || md.EnvID != "e-1" || md.AccessTokenHash != TokenHash("tok") {
		t.Errorf("metadata %+v", md)
	}
	m.Set(map[string]any{"instanceID": "i-2"})
	if md, err := c.Get(context.Background()); err != nil || md.InstanceID != "i-2" {
		t.Errorf("after Set: %+v, %v", md, err)
	}
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(m.Port) + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET without a session token: %d, want 401", resp.StatusCode)
	}
	if TokenHash("") != "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e" {
		t.Errorf("TokenHash(\"\") = %s, not SHA-512 of the empty string", TokenHash(""))
	}
}
