package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func get(c *client, path string, hdr ...string) (*http.Response, []byte) {
	c.t.Helper()
	return c.do("GET", "/files?path="+url.QueryEscape(path), nil, hdr...)
}

func TestDownloadIdentity(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "hello.txt")
	os.WriteFile(p, []byte("hello, world\n"), 0o644)

	resp, body := get(c, p)
	h := resp.Header
	if resp.StatusCode != 200 || string(body) != "hello, world\n" || h.Get("Content-Length") != "13" ||
		h.Get("Content-Type") != "text/plain; charset=utf-8" || h.Get("Accept-Ranges") != "bytes" ||
		h.Get("Last-Modified") == "" || h.Get("Vary") != "Accept-Encoding" ||
		h.Get("Content-Disposition") != "inline; filename=hello.txt" || h.Get("Content-Encoding") != "" {
		t.Fatalf("%d %q %v", resp.StatusCode, body, h)
	}

	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	resp, body = get(c, empty)
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Length") != "0" {
		t.Fatalf("empty file: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

func TestDownloadContentDisposition(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	for name, want := range map[string]string{
		"hello world.txt": `inline; filename="hello world.txt"`,
		"héllo.txt":       `inline; filename*=utf-8''h%C3%A9llo.txt`,
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("x"), 0o644)
		resp, _ := get(c, p)
		if got := resp.Header.Get("Content-Disposition"); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

func TestDownloadRangesAndConditionals(t *testing.T) {
	c := start(t)
	p := filepath.Join(t.TempDir(), "digits.bin")
	os.WriteFile(p, []byte("0123456789"), 0o644)

	resp, body := get(c, p, "Range", "bytes=2-4")
	if resp.StatusCode != 206 || string(body) != "234" || resp.Header.Get("Content-Range") != "bytes 2-4/10" {
		t.Fatalf("single range: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = get(c, p, "Range", "bytes=0-1,8-9", "Accept-Encoding", "gzip")
	if resp.StatusCode != 206 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") ||
		!bytes.Contains(body, []byte("01")) || !bytes.Contains(body, []byte("89")) || resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("multi range (gzip asked, identity forced): %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, _ = get(c, p, "Range", "bytes=50-60")
	if resp.StatusCode != 416 {
		t.Fatalf("unsatisfiable range: %d", resp.StatusCode)
	}
	resp, _ = get(c, p)
	lm := resp.Header.Get("Last-Modified")
	resp, body = get(c, p, "If-Modified-Since", lm)
	if resp.StatusCode != 304 || len(body) != 0 {
		t.Fatalf("If-Modified-Since: %d %q", resp.StatusCode, body)
	}
	old := time.Unix(1000000000, 0).UTC().Format(http.TimeFormat)
	resp, body = get(c, p, "Range", "bytes=0-0", "If-Range", old)
	if resp.StatusCode != 200 || string(body) != "0123456789" {
		t.Fatalf("If-Range with an old date must send everything: %d %q", resp.StatusCode, body)
	}
	resp, body = get(c, p, "Range", "bytes=0-1", "Accept-Encoding", "identity;q=0, gzip")
	wantJSONError(t, resp, body, 406, "identity encoding not acceptable for Range or conditional request")
}

func TestDownloadGzip(t *testing.T) {
	c := start(t)
	p := filepath.Join(t.TempDir(), "data.json")
	content := strings.Repeat(`{"k":"v"}`, 5000)
	os.WriteFile(p, []byte(content), 0o644)

	for _, ae := range []string{"gzip", "br, gzip;q=0.8", "*;q=0, gzip", "identity;q=0, *"} {
		// A raw transport, so Go does not decompress behind our back.
		req, _ := http.NewRequest("GET", c.s.URL+"/files?path="+url.QueryEscape(p), nil)
		req.Header.Set("Accept-Encoding", ae)
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatalf("%s: %v (headers %v)", ae, err, resp.Header)
		}
		got, err := io.ReadAll(zr)
		resp.Body.Close()
		if err != nil || string(got) != content || resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" ||
			resp.Header.Get("Content-Type") != "application/json" ||
			resp.Header.Get("Vary") != "Accept-Encoding" {
			t.Fatalf("%s: %d %v %v", ae, resp.StatusCode, err, resp.Header)
		}
	}
	for _, ae := range []string{"identity;q=0", "*;q=0", "br, identity;q=0"} {
		resp, body := get(c, p, "Accept-Encoding", ae)
		wantJSONError(t, resp, body, 406, "error parsing Accept-Encoding: no acceptable encoding found, supported: [gzip]")
	}
}

func TestDownloadBadInputs(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	link := filepath.Join(dir, "link-to-dir")
	os.Symlink(dir, link)

	getErr(c, filepath.Join(dir, "missing"), 404, "path '"+filepath.Join(dir, "missing")+"' does not exist")
	getErr(c, dir, 400, "path '"+dir+"' is a directory")
	getErr(c, link, 400, "path '"+link+"' is a directory")
	getErr(c, fifo, 400, "path '"+fifo+"' is not a regular file")
	getErr(c, sock, 400, "path '"+sock+"' is not a regular file")
	getErr(c, "/dev/zero", 400, "path '/dev/zero' is not a regular file")
	getErr(c, "~root/x", 400, "")

	resp, body := c.do("GET", "/files?path=/etc/hostname&username=no-such-user-envd", nil)
	wantJSONError(t, resp, body, 401, "error looking up user 'no-such-user-envd': user: unknown user no-such-user-envd")
	resp, body = c.do("GET", "/files?path=/etc/hostname&signature_expiration=abc", nil)
	if resp.StatusCode != 400 || !strings.HasPrefix(string(body), "Invalid format for parameter signature_expiration:") {
		t.Fatalf("bad expiration: %d %q", resp.StatusCode, body)
	}
	// Go's mux routes HEAD to GET handlers: headers only, never a body.
	resp, body = c.do("HEAD", "/files?path=/etc/hostname", nil)
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Length") == "" {
		t.Fatalf("HEAD: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	// The daemon still serves after all of that.
	os.WriteFile(filepath.Join(dir, "ok"), []byte("ok"), 0o644)
	if resp, body := get(c, filepath.Join(dir, "ok")); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("after bad inputs: %d %q", resp.StatusCode, body)
	}
}

func getErr(c *client, path string, status int, msg string) {
	c.t.Helper()
	resp, body := get(c, path)
	wantJSONError(c.t, resp, body, status, msg)
}

func TestDownloadRelativeToUserHome(t *testing.T) {
	u := addUser(t)
	c := start(t)
	os.WriteFile(filepath.Join(u.Home, "notes.txt"), []byte("mine"), 0o644)
	resp, body := c.do("GET", "/files?path=notes.txt&username="+u.Name, nil)
	if resp.StatusCode != 200 || string(body) != "mine" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	resp, body = c.do("GET", "/files?path=~/notes.txt&username="+u.Name, nil)
	if resp.StatusCode != 200 || string(body) != "mine" {
		t.Fatalf("~ path: %d %q", resp.StatusCode, body)
	}
}
