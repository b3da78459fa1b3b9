package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func (c *client) compose(body string, hdr ...string) (*http.Response, []byte) {
	c.t.Helper()
	return c.do("POST", "/files/compose", strings.NewReader(body), append([]string{"Content-Type", "application/json"}, hdr...)...)
}

func composeBody(t testing.TB, v map[string]any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// noComposeTemp fails if a compose left its temporary file in dir.
func noComposeTemp(t testing.TB, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".e2b-compose.") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestComposeConcatenatesInOrder(t *testing.T) {
	c := start(t)
	u := addUser(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	parts := []string{"one\n", "", "three: " + strings.Repeat("x", 3<<20) + "\n", "four"}
	var srcs []string
	for i, p := range parts {
		f := filepath.Join(dir, fmt.Sprintf("part%d", i))
		os.WriteFile(f, []byte(p), 0o600)
		srcs = append(srcs, f)
	}
	// A source through a symlink is read through it; the link is what goes.
	link := filepath.Join(dir, "link")
	os.Symlink(srcs[3], link)
	srcs[3] = link
	dest := filepath.Join(dir, "new", "sub", "out.bin")
	resp, body := c.compose(composeBody(t, map[string]any{"source_paths": srcs, "destination": dest, "username": u.Name}))
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || resp.Header.Get("Cache-Control") != "" {
		t.Fatalf("%d %s %v", resp.StatusCode, body, resp.Header)
	}
	want := fmt.Sprintf(`{"path":%q,"name":"out.bin","type":"file"}`+"\n", dest)
	if string(body) != want {
		t.Fatalf("body %s, want %s", body, want)
	}
	if got := readFile(t, dest); got != strings.Join(parts, "") {
		t.Fatalf("content: %d bytes, want %d", len(got), len(strings.Join(parts, "")))
	}
	for _, s := range srcs {
		if _, err := os.Lstat(s); !os.IsNotExist(err) {
			t.Errorf("source %s still there: %v", s, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "part3")); err != nil {
		t.Error("the symlink's target was removed instead of the link")
	}
	for _, p := range []string{dest, filepath.Dir(dest), filepath.Dir(filepath.Dir(dest))} {
		if uid, gid, _ := owner(t, p); uid != u.UID || gid != u.GID {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, uid, gid, u.UID, u.GID)
		}
	}
	noComposeTemp(t, filepath.Dir(dest))
}

// The destination is replaced atomically by a new file; duplicates repeat.
func TestComposeReplacesDestination(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	a, dest := filepath.Join(dir, "a"), filepath.Join(dir, "dest")
	os.WriteFile(a, []byte("ab"), 0o644)
	os.WriteFile(dest, []byte("old content"), 0o600)
	before, _ := os.Stat(dest)
	resp, body := c.compose(composeBody(t, map[string]any{"source_paths": []string{a, a, dir + "/../" + filepath.Base(dir) + "/a"}, "destination": dest}))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	after, _ := os.Stat(dest)
	if got := readFile(t, dest); got != "ababab" || os.SameFile(before, after) {
		t.Fatalf("content %q, same inode %v", got, os.SameFile(before, after))
	}
	// Not idempotent: the sources are gone.
	resp, body = c.compose(composeBody(t, map[string]any{"source_paths": []string{a}, "destination": dest}))
	wantJSONError(t, resp, body, 404, "source file not found: "+a)
}

// Relative paths resolve as everywhere else (§6.3): against the user's home.
func TestComposeRelativePaths(t *testing.T) {
	c := start(t)
	u := addUser(t)
	os.WriteFile(filepath.Join(u.Home, "x"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(u.Home, "y"), []byte("y"), 0o644)
	resp, body := c.compose(composeBody(t, map[string]any{"source_paths": []string{"x", "~/y"}, "destination": "xy", "username": u.Name}))
	if resp.StatusCode != 200 || readFile(t, filepath.Join(u.Home, "xy")) != "xy" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

func TestComposeBadRequests(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	a, b, dest := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "dest")
	os.WriteFile(a, []byte("A"), 0o644)
	os.WriteFile(b, []byte("B"), 0o644)
	os.WriteFile(dest, []byte("keep"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "dangling"))
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		body   string
		status int
		msg    string
	}{
		{``, 400, "invalid request body: EOF"},
		{`{`, 400, "invalid request body: unexpected EOF"},
		{`[]`, 400, "invalid request body: json: cannot unmarshal array into Go value of type httpapi.composeRequest"},
		{`{}`, 400, "source_paths must not be empty"},
		{`{"source_paths":[],"destination":"x"}`, 400, "source_paths must not be empty"},
		{composeBody(t, map[string]any{"source_paths": []string{a}}), 400, "destination is required"},
		// Order: an empty destination is reported before an unknown user.
		{composeBody(t, map[string]any{"source_paths": []string{a}, "username": "nobody-such"}), 400, "destination is required"},
		{composeBody(t, map[string]any{"source_paths": []string{a}, "destination": dest, "username": ""}), 401, ""},
		{composeBody(t, map[string]any{"source_paths": []string{a}, "destination": dest, "username": "envd-no-such-user"}), 401, ""},
		{composeBody(t, map[string]any{"source_paths": []string{a}, "destination": "/x\x00y"}), 400, ""},
		{composeBody(t, map[string]any{"source_paths": []string{"/x\x00y"}, "destination": dest}), 400, ""},
		{composeBody(t, map[string]any{"source_paths": []string{a, dest}, "destination": dest}), 400, fmt.Sprintf("source path %q cannot be the same as destination", dest)},
		{composeBody(t, map[string]any{"source_paths": []string{a, dir + "/./dest"}, "destination": dest}), 400, fmt.Sprintf("source path %q cannot be the same as destination", dir+"/./dest")},
		// The first bad source in order decides: missing before not-regular.
		{composeBody(t, map[string]any{"source_paths": []string{a, missing, dir}, "destination": dest}), 404, "source file not found: " + missing},
		{composeBody(t, map[string]any{"source_paths": []string{filepath.Join(dir, "dangling")}, "destination": dest}), 404, "source file not found: " + filepath.Join(dir, "dangling")},
		{composeBody(t, map[string]any{"source_paths": []string{a + "/under-a-file"}, "destination": dest}), 404, "source file not found: " + a + "/under-a-file"},
		{composeBody(t, map[string]any{"source_paths": []string{a, filepath.Join(dir, "sub")}, "destination": dest}), 400, "source path is not a regular file: " + filepath.Join(dir, "sub")},
		{composeBody(t, map[string]any{"source_paths": []string{a, "/dev/null"}, "destination": dest}), 400, "source path is not a regular file: /dev/null"},
		// A directory destination fails at the rename, after the copy.
		{composeBody(t, map[string]any{"source_paths": []string{a, b}, "destination": filepath.Join(dir, "sub")}), 500, ""},
		// Parents cannot be made under a file.
		{composeBody(t, map[string]any{"source_paths": []string{a, b}, "destination": a + "/x/y"}), 500, ""},
	} {
		resp, body := c.compose(tc.body)
		wantJSONError(t, resp, body, tc.status, tc.msg)
		// Nothing changed: sources and destination as they were.
		if readFile(t, a) != "A" || readFile(t, b) != "B" || readFile(t, dest) != "keep" {
			t.Fatalf("%s changed files", tc.body)
		}
		noComposeTemp(t, dir)
		noComposeTemp(t, filepath.Join(dir, "sub"))
	}
	// Unknown keys and trailing data are ignored, as E2B's decoder does.
	resp, body := c.compose(composeBody(t, map[string]any{"source_paths": []string{a, b}, "destination": dest, "extra": 1}) + " trailing")
	if resp.StatusCode != 200 || readFile(t, dest) != "AB" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if resp, _ := c.do("GET", "/health", nil); resp.StatusCode >= 300 {
		t.Fatalf("daemon unhealthy: %d", resp.StatusCode)
	}
}

// A full disk is the kernel's own ENOSPC on a small tmpfs: 507, the old
// destination intact, the sources kept, no temporary file.
func TestComposeNoSpace(t *testing.T) {
	c := start(t)
	dir := mountTmpfs(t, "size=1m")
	a, b, dest := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "dest")
	os.WriteFile(a, make([]byte, 400<<10), 0o644)
	os.WriteFile(b, make([]byte, 400<<10), 0o644)
	os.WriteFile(dest, []byte("keep"), 0o644)
	resp, body := c.compose(composeBody(t, map[string]any{"source_paths": []string{a, b}, "destination": dest}))
	wantJSONError(t, resp, body, 507, "not enough disk space available")
	if readFile(t, dest) != "keep" {
		t.Fatal("destination changed")
	}
	for _, s := range []string{a, b} {
		if _, err := os.Stat(s); err != nil {
			t.Fatalf("source removed after a failure: %v", err)
		}
	}
	noComposeTemp(t, dir)
}

// §18.0: compose needs the access token once one is set; it is not one of
// the /files routes that take a signature instead.
func TestComposeAuth(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	a, dest := filepath.Join(dir, "a"), filepath.Join(dir, "dest")
	os.WriteFile(a, []byte("A"), 0o644)
	c.init(`{"accessToken":"secret"}`)
	body := composeBody(t, map[string]any{"source_paths": []string{a}, "destination": dest})
	resp, b := c.compose(body)
	wantJSONError(t, resp, b, 401, "")
	resp, b = c.compose(body, "X-Access-Token", "wrong")
	wantJSONError(t, resp, b, 401, "")
	resp, b = c.do("POST", "/files/compose?signature=v1_x&signature_expiration=9999999999", strings.NewReader(body))
	wantJSONError(t, resp, b, 401, "")
	if _, err := os.Stat(a); err != nil {
		t.Fatal("an unauthorised compose removed a source")
	}
	resp, b = c.compose(body, "X-Access-Token", "secret")
	if resp.StatusCode != 200 || readFile(t, dest) != "A" {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	// A Basic-auth header naming no user is refused before compose runs.
	resp, b = c.compose(body, "X-Access-Token", "secret", "Authorization", "Basic ZW52ZC1uby1zdWNoLXVzZXI6")
	if resp.StatusCode != 401 {
		t.Fatalf("unknown Basic user: %d %s", resp.StatusCode, b)
	}
}

// No inode left for the temporary file: the same 507, nothing changed.
func TestComposeNoInodes(t *testing.T) {
	c := start(t)
	dir := mountTmpfs(t, "size=1m,nr_inodes=4")
	a, dest := filepath.Join(dir, "a"), filepath.Join(dir, "dest")
	os.WriteFile(a, []byte("A"), 0o644)
	os.WriteFile(dest, []byte("keep"), 0o644)
	for i := 0; ; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint("fill", i)), nil, 0o644); err != nil {
			break
		}
	}
	resp, body := c.compose(composeBody(t, map[string]any{"source_paths": []string{a}, "destination": dest}))
	wantJSONError(t, resp, body, 507, "not enough disk space available")
	if readFile(t, dest) != "keep" || readFile(t, a) != "A" {
		t.Fatal("files changed")
	}
	noComposeTemp(t, dir)
}
