package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/envd-dev/envd/internal/fsmeta"
)

type entry struct {
	Path     string            `json:"path"`
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Metadata map[string]string `json:"metadata"`
}

func wantEntries(t testing.TB, resp *http.Response, body []byte, paths ...string) []entry {
	t.Helper()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d (%s): %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var raw []map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("%q: %v", body, err)
	}
	var got []entry
	json.Unmarshal(body, &got)
	if len(got) != len(paths) {
		t.Fatalf("got %d entries %s, want %v", len(got), body, paths)
	}
	for i, p := range paths {
		if got[i].Path != p || got[i].Name != filepath.Base(p) || got[i].Type != "file" {
			t.Fatalf("entry %d = %+v, want path %s", i, got[i], p)
		}
		for k := range raw[i] {
			if k != "path" && k != "name" && k != "type" && k != "metadata" {
				t.Fatalf("unexpected key %q in %s", k, body)
			}
		}
		if _, has := raw[i]["metadata"]; has && len(got[i].Metadata) == 0 {
			t.Fatalf("empty metadata must be omitted: %s", body)
		}
	}
	return got
}

func octet(c *client, path, content string, hdr ...string) (*http.Response, []byte) {
	c.t.Helper()
	return c.do("POST", "/files?path="+url.QueryEscape(path), strings.NewReader(content),
		append([]string{"Content-Type", "application/octet-stream"}, hdr...)...)
}

func TestUploadOctetStream(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "new", "deeper", "a.txt")
	resp, body := octet(c, p, "hello")
	wantEntries(t, resp, body, p)
	if got := readFile(t, p); got != "hello" {
		t.Fatalf("content %q", got)
	}
	if _, _, mode := owner(t, p); mode.Perm() != 0o644 {
		t.Errorf("new file mode %v, want 0644 (0666 minus umask 022)", mode)
	}
	noTempFiles(t, filepath.Dir(p))

	resp, body = c.do("POST", "/files", strings.NewReader("x"), "Content-Type", "application/octet-stream")
	wantJSONError(t, resp, body, 400, "path query parameter is required for raw body upload")
}

func TestUploadReplaceKeepsOwnerAndMode(t *testing.T) {
	needRoot(t)
	c := start(t)
	p := filepath.Join(t.TempDir(), "script.sh")
	os.WriteFile(p, []byte("old"), 0o600)
	os.Chmod(p, 0o751)
	os.Chown(p, 1234, 5678)
	resp, body := octet(c, p, "new content")
	wantEntries(t, resp, body, p)
	uid, gid, mode := owner(t, p)
	if readFile(t, p) != "new content" || uid != 1234 || gid != 5678 || mode.Perm() != 0o751 {
		t.Fatalf("after replace: %d:%d %v %q", uid, gid, mode, readFile(t, p))
	}
}

func TestUploadThroughSymlinkWritesTarget(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	real, link := filepath.Join(dir, "real.txt"), filepath.Join(dir, "link.txt")
	os.WriteFile(real, []byte("old"), 0o644)
	os.Symlink("real.txt", link)
	resp, body := octet(c, link, "via link")
	wantEntries(t, resp, body, link)
	if lst, _ := os.Lstat(link); lst.Mode()&os.ModeSymlink == 0 || readFile(t, real) != "via link" {
		t.Fatalf("link replaced or target not written: %v %q", lst.Mode(), readFile(t, real))
	}
}

func TestUploadMultipart(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.txt"), filepath.Join(dir, "sub", "dir", "b.txt")
	ct, body := multipartBody(t,
		part{field: "ignored", content: "not a file"},
		part{"file", a, "AAA"},
		part{"other", "x.txt", "skipped part"},
		part{"file", b, "BBB"})
	resp, rb := c.do("POST", "/files", bytes.NewReader(body), "Content-Type", ct)
	wantEntries(t, resp, rb, a, b)
	if readFile(t, a) != "AAA" || readFile(t, b) != "BBB" {
		t.Fatal("content mismatch")
	}
	if _, err := os.Stat(filepath.Join(dir, "x.txt")); err == nil {
		t.Fatal("a part not named file was written")
	}

	// Query path wins over the filename, so a second part targets the same path.
	one := filepath.Join(dir, "one.txt")
	ct, body = multipartBody(t, part{"file", "ignored-name", "first"}, part{"file", "other", "second"})
	resp, rb = c.do("POST", "/files?path="+url.QueryEscape(one), bytes.NewReader(body), "Content-Type", ct)
	wantJSONError(t, resp, rb, 400, "you cannot upload multiple files to the same path '"+one+"' in one upload request, only the first specified file was uploaded")
	if readFile(t, one) != "first" {
		t.Fatal("first part not kept")
	}

	// A repeated filename after two successes lists what was written.
	x, y := filepath.Join(dir, "x"), filepath.Join(dir, "y")
	ct, body = multipartBody(t, part{"file", x, "1"}, part{"file", y, "2"}, part{"file", x, "3"})
	resp, rb = c.do("POST", "/files", bytes.NewReader(body), "Content-Type", ct)
	wantJSONError(t, resp, rb, 400, fmt.Sprintf("you cannot upload multiple files to the same path '%s' in one upload request, only the first specified file was uploaded, also the following files were uploaded: %s, %s", x, x, y))
	if readFile(t, x) != "1" {
		t.Fatal("duplicate overwrote the first file")
	}

	// No file part at all: an empty array.
	ct, body = multipartBody(t, part{field: "nope", content: "v"})
	resp, rb = c.do("POST", "/files", bytes.NewReader(body), "Content-Type", ct)
	if resp.StatusCode != 200 || strings.TrimSpace(string(rb)) != "[]" {
		t.Fatalf("no file part: %d %q", resp.StatusCode, rb)
	}
}

func TestUploadMultipartFilenameRelativeToHome(t *testing.T) {
	u := addUser(t)
	c := start(t)
	ct, body := multipartBody(t, part{"file", "docs/r.txt", "rel"})
	resp, rb := c.do("POST", "/files?username="+u.Name, bytes.NewReader(body), "Content-Type", ct)
	p := filepath.Join(u.Home, "docs", "r.txt")
	wantEntries(t, resp, rb, p)
	for _, path := range []string{p, filepath.Dir(p)} {
		if uid, gid, _ := owner(t, path); uid != u.UID || gid != u.GID {
			t.Errorf("%s owned by %d:%d, want %d:%d", path, uid, gid, u.UID, u.GID)
		}
	}
}

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestUploadGzipBody(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "raw.txt")
	resp, body := c.do("POST", "/files?path="+url.QueryEscape(p), bytes.NewReader(gz(t, []byte("zipped raw"))),
		"Content-Type", "application/octet-stream", "Content-Encoding", "gzip")
	wantEntries(t, resp, body, p)
	if readFile(t, p) != "zipped raw" {
		t.Fatal(readFile(t, p))
	}

	m := filepath.Join(dir, "multi.txt")
	ct, mp := multipartBody(t, part{"file", m, "zipped multipart"})
	resp, body = c.do("POST", "/files", bytes.NewReader(gz(t, mp)), "Content-Type", ct, "Content-Encoding", "GZIP")
	wantEntries(t, resp, body, m)
	if readFile(t, m) != "zipped multipart" {
		t.Fatal(readFile(t, m))
	}
}

func TestUploadMetadata(t *testing.T) {
	c := start(t)
	p := filepath.Join(t.TempDir(), "m.txt")
	resp, body := octet(c, p, "x", "X-Metadata-Owner", "alice", "x-metadata-Team", "core")
	got := wantEntries(t, resp, body, p)
	want := map[string]string{"owner": "alice", "team": "core"}
	if fmt.Sprint(got[0].Metadata) != fmt.Sprint(want) {
		t.Fatalf("response metadata %v", got[0].Metadata)
	}
	if md, _ := fsmeta.Read(p); fmt.Sprint(md) != fmt.Sprint(want) {
		t.Fatalf("stored metadata %v", md)
	}
	// A new upload without headers clears it.
	resp, body = octet(c, p, "y")
	got = wantEntries(t, resp, body, p)
	if md, _ := fsmeta.Read(p); len(md) != 0 || got[0].Metadata != nil {
		t.Fatalf("metadata not cleared: %v %v", md, got[0].Metadata)
	}

	resp, body = octet(c, p, "z", "X-Metadata-Big", strings.Repeat("v", 5000))
	wantErrorPrefix(t, resp, body, 400, "invalid metadata: ")
	if readFile(t, p) != "y" {
		t.Fatal("rejected upload changed the file")
	}
}

func TestUploadBadInputs(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	keep := filepath.Join(dir, "keep.txt")
	os.WriteFile(keep, []byte("precious"), 0o644)
	q := "/files?path=" + url.QueryEscape(keep)

	cases := []struct {
		name   string
		target string
		body   []byte
		hdr    []string
		status int
		msg    string
	}{
		{"unsupported content type", q, []byte("x"), []string{"Content-Type", "text/plain"}, 400,
			"unsupported content type: text/plain, expected multipart/form-data or application/octet-stream"},
		{"no content type", q, []byte("x"), nil, 400,
			"unsupported content type: , expected multipart/form-data or application/octet-stream"},
		{"unsupported encoding", q, []byte("x"), []string{"Content-Type", "application/octet-stream", "Content-Encoding", "br"}, 400,
			"error decompressing request body: unsupported Content-Encoding: br, supported: [gzip]"},
		{"bad gzip header", q, []byte("not gzip at all"), []string{"Content-Type", "application/octet-stream", "Content-Encoding", "gzip"}, 400, ""},
		{"corrupt gzip data", q, corruptGzip(t), []string{"Content-Type", "application/octet-stream", "Content-Encoding", "gzip"}, 400, ""},
		{"truncated gzip", q, gz(t, bytes.Repeat([]byte("a"), 100000))[:60], []string{"Content-Type", "application/octet-stream", "Content-Encoding", "gzip"}, 400, ""},
		{"multipart without boundary", q, []byte("x"), []string{"Content-Type", "multipart/form-data"}, 400,
			"error parsing multipart form: no multipart boundary param in Content-Type"},
		{"malformed multipart", q, []byte("--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nunterminated"),
			[]string{"Content-Type", "multipart/form-data; boundary=b"}, 400, ""},
		{"garbage multipart", q, []byte("no boundary anywhere"), []string{"Content-Type", "multipart/form-data; boundary=b"}, 400, ""},
		{"directory target", "/files?path=" + url.QueryEscape(dir), []byte("x"), []string{"Content-Type", "application/octet-stream"}, 400,
			"path is a directory: " + dir},
		{"device target", "/files?path=/dev/null", []byte("x"), []string{"Content-Type", "application/octet-stream"}, 400,
			"path is not a regular file: /dev/null"},
		{"parent is a file", "/files?path=" + url.QueryEscape(keep+"/child"), []byte("x"), []string{"Content-Type", "application/octet-stream"}, 400,
			"error ensuring directories: path is a file: " + keep},
		{"unknown user", q + "&username=no-such-user-envd", []byte("x"), []string{"Content-Type", "application/octet-stream"}, 401,
			"error looking up user 'no-such-user-envd': user: unknown user no-such-user-envd"},
		{"tilde other user", "/files?path=~root/x", []byte("x"), []string{"Content-Type", "application/octet-stream"}, 400, ""},
		{"invalid metadata char", q, []byte("x"), []string{"Content-Type", "application/octet-stream", "X-Metadata-K", "caf\xc3\xa9"}, 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := c.do("POST", tc.target, bytes.NewReader(tc.body), tc.hdr...)
			if tc.msg != "" {
				wantJSONError(t, resp, body, tc.status, tc.msg)
			} else {
				wantJSONError(t, resp, body, tc.status, "")
			}
			if readFile(t, keep) != "precious" {
				t.Fatal("failed upload changed the existing file")
			}
			noTempFiles(t, dir)
		})
	}

	// A multipart filename missing, after a good part: 400, the good one kept.
	good := filepath.Join(dir, "good.txt")
	body := "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + good + "\"\r\n\r\nok\r\n" +
		"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nnameless\r\n--b--\r\n"
	resp, rb := c.do("POST", "/files", strings.NewReader(body), "Content-Type", "multipart/form-data; boundary=b")
	wantJSONError(t, resp, rb, 400, "error getting multipart custom part file name: filename not found in Content-Disposition header")
	if readFile(t, good) != "ok" {
		t.Fatal("earlier part lost")
	}

	// A later part that breaks mid-body leaves its own target untouched.
	body = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + good + "2\"\r\n\r\nsecond ok\r\n" +
		"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + keep + "\"\r\n\r\ntruncated without closing boundary"
	resp, rb = c.do("POST", "/files", strings.NewReader(body), "Content-Type", "multipart/form-data; boundary=b")
	wantErrorPrefix(t, resp, rb, 400, "error reading form: ")
	if readFile(t, good+"2") != "second ok" || readFile(t, keep) != "precious" {
		t.Fatal("multipart failure handling")
	}
	noTempFiles(t, dir)
}

func corruptGzip(t testing.TB) []byte {
	b := gz(t, bytes.Repeat([]byte("abcdefgh"), 10000))
	for i := 20; i < len(b)-8; i += 7 {
		b[i] ^= 0xff
	}
	return b
}

func TestUploadFIFOTargetDoesNotHang(t *testing.T) {
	c := start(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	resp, body := octet(c, fifo, "x")
	wantJSONError(t, resp, body, 400, "path is not a regular file: "+fifo)
}

// An upload must look like a write of the target to inotify watchers: the
// rename into place raises IN_MOVED_TO, and a WRITE must follow on the same
// name, which the SDKs' watch tests wait for. The temporary name may appear
// too, but the target's events come last.
func TestUploadRaisesModifyOnTarget(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "watched.txt")
	os.WriteFile(target, []byte("old"), 0o644)
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_MODIFY|syscall.IN_MOVED_TO|syscall.IN_CREATE); err != nil {
		t.Fatal(err)
	}
	resp, body := octet(c, target, "new")
	wantEntries(t, resp, body, target)

	// Everything happened before the response, so the queue is complete.
	var got []string
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.Read(fd, buf)
		if err != nil {
			break
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			if name == "watched.txt" {
				switch {
				case ev.Mask&syscall.IN_MOVED_TO != 0:
					got = append(got, "moved_to")
				case ev.Mask&syscall.IN_MODIFY != 0:
					got = append(got, "modify")
				}
			}
			off += syscall.SizeofInotifyEvent + int(ev.Len)
		}
	}
	if strings.Join(got, ",") != "moved_to,modify" {
		t.Fatalf("events on the target: %v, want moved_to then modify", got)
	}
}
