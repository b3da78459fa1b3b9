package fsapi_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"

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

func ownerOf(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(int(st.Uid)) + ":" + strconv.Itoa(int(st.Gid))
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
