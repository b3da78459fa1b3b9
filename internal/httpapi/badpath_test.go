package httpapi_test

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A symlink loop is the client's path, not a server fault: 400 with the
// kernel's words, for download and for upload at or below the loop.
func TestSymlinkLoop(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	resp, body := c.do("GET", "/files?path="+url.QueryEscape(loop), nil)
	wantJSONError(t, resp, body, 400, "error checking if path exists '"+loop+"': stat "+loop+": too many levels of symbolic links")

	resp, body = octet(c, loop, "x")
	wantJSONError(t, resp, body, 400, "error checking path "+loop+": stat "+loop+": too many levels of symbolic links")

	resp, body = octet(c, filepath.Join(loop, "f.txt"), "x")
	wantJSONError(t, resp, body, 400, "error ensuring directories: stat "+loop+": too many levels of symbolic links")

	ct, mp := multipartBody(t, part{"file", filepath.Join(loop, "g.txt"), "x"})
	resp, body = c.do("POST", "/files", strings.NewReader(string(mp)), "Content-Type", ct)
	wantJSONError(t, resp, body, 400, "error ensuring directories: stat "+loop+": too many levels of symbolic links")
	noTempFiles(t, dir)
	healthy(t, c)
}

// An upload whose parent (or an ancestor) is a regular file is 400, naming
// that file, and leaves it as it was.
func TestUploadParentIsFile(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file.txt")
	os.WriteFile(file, []byte("keep"), 0o644)
	for _, target := range []string{filepath.Join(file, "child"), filepath.Join(file, "a", "b", "c.txt")} {
		resp, body := octet(c, target, "x")
		wantJSONError(t, resp, body, 400, "error ensuring directories: path is a file: "+file)
	}
	if readFile(t, file) != "keep" {
		t.Fatal("the file in the way changed")
	}
	healthy(t, c)
}

// dir/sub/../f.txt is stored at dir/f.txt and reported so, creates no sub,
// and counts as the same target as dir/f.txt within one request.
func TestUploadReportsCleanPath(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	want := filepath.Join(dir, "f.txt")
	resp, body := octet(c, dir+"/sub/../f.txt", "raw")
	wantEntries(t, resp, body, want)
	if readFile(t, want) != "raw" {
		t.Fatal("content")
	}
	if _, err := os.Stat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Fatalf("upload created the directory it named only to leave: %v", err)
	}

	ct, mp := multipartBody(t, part{"file", dir + "/x/./../g.txt", "multi"}, part{"file", dir + "//h.txt", "h"})
	resp, body = c.do("POST", "/files", strings.NewReader(string(mp)), "Content-Type", ct)
	wantEntries(t, resp, body, filepath.Join(dir, "g.txt"), filepath.Join(dir, "h.txt"))

	ct, mp = multipartBody(t, part{"file", dir + "/sub/../k.txt", "first"}, part{"file", dir + "/k.txt", "second"})
	resp, body = c.do("POST", "/files", strings.NewReader(string(mp)), "Content-Type", ct)
	wantJSONError(t, resp, body, 400, "you cannot upload multiple files to the same path '"+filepath.Join(dir, "k.txt")+"' in one upload request, only the first specified file was uploaded")
	if readFile(t, filepath.Join(dir, "k.txt")) != "first" {
		t.Fatal("second part overwrote the first")
	}
}

func healthy(t *testing.T, c *client) {
	t.Helper()
	if resp, body := c.do("GET", "/health", nil); resp.StatusCode != 200 {
		t.Fatalf("health: %d %s", resp.StatusCode, body)
	}
}
