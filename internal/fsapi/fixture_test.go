package fsapi_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/envdtest"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
)

// codecs are the two wire forms in use: JSON (the SDKs) and binary proto
// (the Wrenn host agent).
var codecs = []struct {
	name string
	opts []connect.ClientOption
}{
	{"json", []connect.ClientOption{connect.WithProtoJSON()}},
	{"proto", nil},
}

// headerTransport adds fixed headers (Basic auth, keepalive interval) to
// every request, streaming or not.
type headerTransport struct {
	base http.RoundTripper
	hdr  http.Header
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h.hdr {
		r.Header[k] = v
	}
	return h.base.RoundTrip(r)
}

// client returns a generated Filesystem client for srv; hdr pairs are
// extra headers, e.g. "Keepalive-Ping-Interval", "1".
func client(srv *envdtest.Server, opts []connect.ClientOption, hdr ...string) filesystemconnect.FilesystemClient {
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	hc := &http.Client{Transport: headerTransport{base: srv.Client.Transport, hdr: h}}
	return filesystemconnect.NewFilesystemClient(hc, srv.URL, opts...)
}

func basic(name string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"))
}

func wantCode(t *testing.T, what string, err error, code connect.Code) {
	t.Helper()
	if code == 0 {
		if err != nil {
			t.Errorf("%s: %v, want success", what, err)
		}
		return
	}
	if err == nil {
		t.Errorf("%s: success, want %v", what, code)
		return
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Errorf("%s: non-connect error %v", what, err)
		return
	}
	if ce.Code() != code {
		t.Errorf("%s: code %v (%s), want %v", what, ce.Code(), ce.Message(), code)
	}
	t.Logf("%s: %v: %s", what, ce.Code(), ce.Message())
	if ce.Message() == "" {
		t.Errorf("%s: empty error message", what)
	}
}

var userSeq atomic.Int32

// testUser creates a real account with a home directory (root only).
func testUser(t testing.TB) *user.User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating users needs root")
	}
	name := fmt.Sprintf("fsapi%d_%d", os.Getpid()%100000, userSeq.Add(1))
	// Other test packages add users concurrently; useradd then fails to
	// lock /etc/passwd, so retry that case a few times.
	for attempt := 0; ; attempt++ {
		out, err := exec.Command("useradd", "--create-home", "--user-group", name).CombinedOutput()
		if err == nil {
			break
		}
		if attempt < 50 && bytes.Contains(out, []byte("lock")) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("userdel", "--remove", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func ownerOf(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(int(st.Uid)) + ":" + strconv.Itoa(int(st.Gid))
}

// requireXattrs skips when dir's filesystem has no user xattrs.
func requireXattrs(t *testing.T, dir string) {
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

func mustWrite(t testing.TB, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
