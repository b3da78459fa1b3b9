package httpapi_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/envd-dev/envd/internal/testkit"
)

// mountTmpfs mounts a small real tmpfs so "disk full" is the kernel's own ENOSPC.
func mountTmpfs(t testing.TB, opts string) string {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Fatalf("mount tmpfs (%s): %v", opts, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes to path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{0xAA}, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

func hasTemp(dir string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".envd-upload-") {
			return true
		}
	}
	return false
}

func TestDataSafetyDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "size=16m")
	c := start(t)
	target := filepath.Join(dir, "precious.bin")
	old := bytes.Repeat([]byte("old content "), 100000) // ~1.1 MiB
	os.WriteFile(target, old, 0o644)
	fill(t, filepath.Join(dir, "filler"))

	newContent := bytes.Repeat([]byte("N"), 2<<20)
	resp, body := c.do("POST", "/files?path="+url.QueryEscape(target), bytes.NewReader(newContent), "Content-Type", "application/octet-stream")
	wantJSONError(t, resp, body, 507, fmt.Sprintf("attempted to write %d bytes: not enough disk space available", len(newContent)))
	if got, _ := os.ReadFile(target); !bytes.Equal(got, old) {
		t.Fatalf("old content damaged: %d bytes", len(got))
	}
	noTempFiles(t, dir)

	// Multipart: the same, through a part.
	ct, mp := multipartBody(t, part{"file", target, string(newContent)})
	resp, body = c.do("POST", "/files", bytes.NewReader(mp), "Content-Type", ct)
	wantErrorPrefix(t, resp, body, 507, "attempted to write")
	if got, _ := os.ReadFile(target); !bytes.Equal(got, old) {
		t.Fatal("old content damaged by multipart")
	}
	noTempFiles(t, dir)

	// Space freed: the daemon is healthy and the upload now succeeds.
	os.Remove(filepath.Join(dir, "filler"))
	resp, body = c.do("POST", "/files?path="+url.QueryEscape(target), bytes.NewReader(newContent), "Content-Type", "application/octet-stream")
	wantEntries(t, resp, body, target)
	if got, _ := os.ReadFile(target); !bytes.Equal(got, newContent) {
		t.Fatal("upload after freeing space")
	}
}

func TestDataSafetyNoInodes(t *testing.T) {
	dir := mountTmpfs(t, "size=16m,nr_inodes=16")
	c := start(t)
	target := filepath.Join(dir, "keep.txt")
	os.WriteFile(target, []byte("keep"), 0o644)
	for i := 0; ; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprint("inode", i)))
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
		f.Close()
	}
	resp, body := c.do("POST", "/files?path="+url.QueryEscape(target), strings.NewReader("replacement"), "Content-Type", "application/octet-stream")
	wantErrorPrefix(t, resp, body, 507, "not enough inodes available: ")
	if readFile(t, target) != "keep" {
		t.Fatal("old content damaged")
	}
}

func TestDataSafetyClientDisconnect(t *testing.T) {
	dir := mountTmpfs(t, "size=16m")
	c := start(t)
	target := filepath.Join(dir, "precious.txt")
	os.WriteFile(target, []byte("old"), 0o644)

	for _, mode := range []string{"octet", "multipart", "gzip"} {
		t.Run(mode, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(c.s.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			payload := bytes.Repeat([]byte("x"), 1<<20)
			ctype, extra := "application/octet-stream", ""
			q := "?path=" + url.QueryEscape(target)
			switch mode {
			case "multipart":
				ctype, q = "multipart/form-data; boundary=BB", ""
				payload = append([]byte("--BB\r\nContent-Disposition: form-data; name=\"file\"; filename=\""+target+"\"\r\n\r\n"), payload...)
			case "gzip":
				extra = "Content-Encoding: gzip\r\n"
				payload = gz(t, payload)
			}
			fmt.Fprintf(conn, "POST /files%s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n",
				q, ctype, extra, 10<<20)
			if _, err := conn.Write(payload); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, "the upload's temporary file", func() bool { return hasTemp(dir) })
			conn.Close()
			testkit.Eventually(t, "the temporary file to be removed", func() bool { return !hasTemp(dir) })
			if readFile(t, target) != "old" {
				t.Fatal("old content damaged")
			}
		})
	}
	if resp, body := c.do("GET", "/files?path="+url.QueryEscape(target), nil); resp.StatusCode != 200 || string(body) != "old" {
		t.Fatalf("daemon after disconnects: %d %q", resp.StatusCode, body)
	}
}

func TestDataSafetyConcurrentUploads(t *testing.T) {
	dir := mountTmpfs(t, "size=16m")
	c := start(t)
	target := filepath.Join(dir, "contended.bin")
	os.WriteFile(target, []byte("initial"), 0o644)
	const n = 8
	contents := make([][]byte, n)
	for i := range contents {
		// Each version is distinct in every block, so a mix would show.
		contents[i] = bytes.Repeat([]byte{byte('a' + i)}, 1<<20)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ct, mp := multipartBody(t, part{"file", target, string(contents[i])})
			hdr := []string{"Content-Type", ct}
			b := mp
			if i%2 == 1 { // half of them raw, to mix both paths
				hdr, b = []string{"Content-Type", "application/octet-stream"}, contents[i]
			}
			q := ""
			if i%2 == 1 {
				q = "?path=" + url.QueryEscape(target)
			}
			resp, body := c.do("POST", "/files"+q, bytes.NewReader(b), hdr...)
			if resp.StatusCode != 200 {
				t.Errorf("upload %d: %d %s", i, resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	got, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	matches := 0
	for _, want := range contents {
		if bytes.Equal(got, want) {
			matches++
		}
	}
	if matches != 1 {
		t.Fatalf("result (%d bytes, starts %q) equals %d of the uploads, want exactly 1", len(got), got[:min(8, len(got))], matches)
	}
	noTempFiles(t, dir)
}
