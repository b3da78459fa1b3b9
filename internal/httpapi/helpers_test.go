package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/envd-dev/envd/internal/envdtest"
	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/testkit"
)

type client struct {
	t testing.TB
	s *envdtest.Server
}

// start runs a daemon. Its client never asks for gzip on its own, so every
// test sees exactly the encoding it asked for.
func start(t testing.TB) *client {
	s := envdtest.Start(t)
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}
	s.Client = &http.Client{Transport: tr}
	// Before the daemon stops (cleanups run last-in first-out): a dialled but
	// never used connection would hold its graceful shutdown for 5 s.
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t, s}
}

// do sends a request; hdr is name, value pairs.
func (c *client) do(method, path string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.s.URL+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.s.Client.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, b
}

func (c *client) init(body string, hdr ...string) {
	c.t.Helper()
	resp, b := c.do("POST", "/init", strings.NewReader(body), hdr...)
	if resp.StatusCode != 204 {
		c.t.Fatalf("/init %s: %d %s", body, resp.StatusCode, b)
	}
}

// wantJSONError checks the §5 error shape, status and exact message.
func wantJSONError(t testing.TB, resp *http.Response, body []byte, status int, msg string) {
	t.Helper()
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("status %d, body %q is not the JSON error shape: %v", resp.StatusCode, body, err)
	}
	if resp.StatusCode != status || e.Code != status || (msg != "" && e.Message != msg) ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("got %d %q (%s), want %d %q", resp.StatusCode, body, resp.Header.Get("Content-Type"), status, msg)
	}
}

func wantErrorPrefix(t testing.TB, resp *http.Response, body []byte, status int, prefix string) {
	t.Helper()
	wantJSONError(t, resp, body, status, "")
	var e struct{ Message string }
	_ = json.Unmarshal(body, &e)
	if !strings.HasPrefix(e.Message, prefix) {
		t.Fatalf("message %q, want prefix %q", e.Message, prefix)
	}
}

type part struct{ field, filename, content string }

func multipartBody(t testing.TB, parts ...part) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.filename == "" {
			w, err = mw.CreateFormField(p.field)
		} else {
			w, err = mw.CreateFormFile(p.field, p.filename)
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, p.content)
	}
	mw.Close()
	return mw.FormDataContentType(), buf.Bytes()
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates users, chowns files and mounts tmpfs")
	}
}

// addUser creates a real account with a home directory for the test.
func addUser(t testing.TB) *execenv.User {
	t.Helper()
	needRoot(t)
	u, err := execenv.LookupUser(testkit.AddUser(t, "envdh", "--shell", "/bin/bash").Username)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func owner(t testing.TB, path string) (uint32, uint32, os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return sys.Uid, sys.Gid, st.Mode()
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// noTempFiles fails if an upload left a temporary file in dir.
func noTempFiles(t testing.TB, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".envd-upload-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}
