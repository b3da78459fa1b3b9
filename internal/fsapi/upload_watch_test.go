package fsapi_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/envdtest"
	fspb "github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
)

// The sequences an in-place write of a file produces (open O_CREAT, chown,
// write; or chown, open O_TRUNC, write), which the SDKs' watch tests count.
var (
	inPlaceNew     = []string{"CREATE", "CHMOD", "WRITE"}
	inPlaceReplace = []string{"CHMOD", "WRITE", "WRITE"}
)

const marker = "zz-marker"

// watchKind is one of the two RPCs that report events. Each collects the
// events up to the CREATE of the marker file, which the test makes after
// the uploads: inotify keeps one queue per watch, so everything the uploads
// raised comes before it.
type watchKind struct {
	name  string
	start func(t *testing.T, fs filesystemconnect.FilesystemClient, dir string, recursive bool) func() []string
}

var watchKinds = []watchKind{
	{"WatchDir", func(t *testing.T, fs filesystemconnect.FilesystemClient, dir string, recursive bool) func() []string {
		st := openWatch(t, fs, &fspb.WatchDirRequest{Path: dir, Recursive: recursive})
		return func() []string {
			mustWrite(t, filepath.Join(dir, marker), "")
			return describe(until(t, st, named(marker, fspb.EventType_EVENT_TYPE_CREATE)))
		}
	}},
	{"CreateWatcher", func(t *testing.T, fs filesystemconnect.FilesystemClient, dir string, recursive bool) func() []string {
		cw, err := fs.CreateWatcher(t.Context(), &fspb.CreateWatcherRequest{Path: dir, Recursive: recursive})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = fs.RemoveWatcher(context.Background(), &fspb.RemoveWatcherRequest{WatcherId: cw.GetWatcherId()})
		})
		return func() []string {
			mustWrite(t, filepath.Join(dir, marker), "")
			var got []*fspb.FilesystemEvent
			for !slices.ContainsFunc(got, named(marker, fspb.EventType_EVENT_TYPE_CREATE)) {
				resp, err := fs.GetWatcherEvents(t.Context(), &fspb.GetWatcherEventsRequest{WatcherId: cw.GetWatcherId()})
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, resp.GetEvents()...)
				if len(resp.GetEvents()) == 0 {
					time.Sleep(5 * time.Millisecond) // the watcher has not read the queue yet
				}
			}
			return describe(got)
		}
	}},
}

// describe renders events as "name TYPE", the marker's own dropped.
func describe(evs []*fspb.FilesystemEvent) []string {
	var out []string
	for _, ev := range evs {
		if ev.GetName() == marker {
			continue
		}
		out = append(out, ev.GetName()+" "+strings.TrimPrefix(ev.GetType().String(), "EVENT_TYPE_"))
	}
	return out
}

func seq(name string, types []string) []string {
	out := make([]string, len(types))
	for i, typ := range types {
		out[i] = name + " " + typ
	}
	return out
}

func uploadRaw(t *testing.T, srv *envdtest.Server, path, content string, hdr ...string) int {
	t.Helper()
	return post(t, srv, "/files?path="+url.QueryEscape(path), strings.NewReader(content),
		append([]string{"Content-Type", "application/octet-stream"}, hdr...)...)
}

func uploadMultipart(t *testing.T, srv *envdtest.Server, files ...[2]string) int {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range files {
		w, err := mw.CreateFormFile("file", f[0])
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, f[1])
	}
	mw.Close()
	return post(t, srv, "/files", &buf, "Content-Type", mw.FormDataContentType())
}

func post(t *testing.T, srv *envdtest.Server, target string, body io.Reader, hdr ...string) int {
	t.Helper()
	req, err := http.NewRequest("POST", srv.URL+target, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := srv.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Logf("POST %s: %d %s", target, resp.StatusCode, b)
	}
	return resp.StatusCode
}

func wantEvents(t *testing.T, got []string, want ...[]string) {
	t.Helper()
	all := slices.Concat(want...)
	if !slices.Equal(got, all) {
		t.Fatalf("events:\n got  %q\n want %q", got, all)
	}
}

// An upload, atomic underneath, is reported by both watcher kinds exactly as
// the in-place write of the same file: no temporary name, CREATE, CHMOD,
// WRITE for a new file and CHMOD, WRITE, WRITE for an overwrite, for raw and
// multipart bodies, and in recursive watches too.
func TestUploadSeenAsInPlaceWrite(t *testing.T) {
	srv := envdtest.Start(t)
	fs := client(srv, codecs[0].opts)
	for _, k := range watchKinds {
		for _, recursive := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/recursive=%v", k.name, recursive), func(t *testing.T) {
				root := t.TempDir()
				dir, prefix := root, ""
				if recursive {
					dir, prefix = filepath.Join(root, "sub", "deeper"), "sub/deeper/"
					if err := os.MkdirAll(dir, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				mustWrite(t, filepath.Join(dir, "old.txt"), "old")
				collect := k.start(t, fs, root, recursive)

				if code := uploadRaw(t, srv, filepath.Join(dir, "f.txt"), "new file"); code != 200 {
					t.Fatalf("raw new: %d", code)
				}
				if code := uploadRaw(t, srv, filepath.Join(dir, "f.txt"), "overwritten"); code != 200 {
					t.Fatalf("raw overwrite: %d", code)
				}
				if code := uploadRaw(t, srv, filepath.Join(dir, "gz.txt"), string(gzipped(t, "zipped")), "Content-Encoding", "gzip"); code != 200 {
					t.Fatalf("raw gzip: %d", code)
				}
				code := uploadMultipart(t, srv,
					[2]string{filepath.Join(dir, "a.txt"), "A"},
					[2]string{filepath.Join(dir, "old.txt"), "replaced"},
					[2]string{filepath.Join(dir, "b.txt"), strings.Repeat("B", 3<<20)}) // several buffers
				if code != 200 {
					t.Fatalf("multipart: %d", code)
				}
				wantEvents(t, collect(),
					seq(prefix+"f.txt", inPlaceNew),
					seq(prefix+"f.txt", inPlaceReplace),
					seq(prefix+"gz.txt", inPlaceNew),
					seq(prefix+"a.txt", inPlaceNew),
					seq(prefix+"old.txt", inPlaceReplace),
					seq(prefix+"b.txt", inPlaceNew))
				if got := readFile(t, filepath.Join(dir, "old.txt")); got != "replaced" {
					t.Fatalf("old.txt = %q", got)
				}
			})
		}
	}
}

// A failed upload leaves the target as it was and raises no event for it;
// the temporary file it made and removed is never reported either.
func TestFailedUploadRaisesNoEvent(t *testing.T) {
	srv := envdtest.Start(t)
	fs := client(srv, codecs[0].opts)
	for _, k := range watchKinds {
		t.Run(k.name, func(t *testing.T) {
			dir := t.TempDir()
			keep := filepath.Join(dir, "keep.txt")
			mustWrite(t, keep, "precious")
			collect := k.start(t, fs, dir, false)

			// A multipart body cut inside its second part: the first file
			// is written, the second target stays untouched.
			body := "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filepath.Join(dir, "ok.txt") + "\"\r\n\r\nok\r\n" +
				"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + keep + "\"\r\n\r\ntruncated without closing boundary"
			if code := post(t, srv, "/files", strings.NewReader(body), "Content-Type", "multipart/form-data; boundary=b"); code != 400 {
				t.Fatalf("truncated multipart: %d, want 400", code)
			}
			// A raw gzip body cut short, so the copy into the temporary
			// file fails midway, to a new name and to the existing file.
			zipped := gzipped(t, strings.Repeat("lost content ", 100000))
			for _, target := range []string{filepath.Join(dir, "never.txt"), keep} {
				if code := uploadRaw(t, srv, target, string(zipped[:len(zipped)/2]), "Content-Encoding", "gzip"); code != 400 {
					t.Fatalf("bad gzip: %d, want 400", code)
				}
			}
			wantEvents(t, collect(), seq("ok.txt", inPlaceNew))
			if got := readFile(t, keep); got != "precious" {
				t.Fatalf("keep.txt = %q", got)
			}
		})
	}
}

// Files other processes write are reported as the kernel saw them, even
// one named like an upload's temporary file: only envd's own, which carry
// its key, are hidden.
func TestOtherWritersStillReported(t *testing.T) {
	srv := envdtest.Start(t)
	fs := client(srv, codecs[0].opts)
	for _, k := range watchKinds {
		t.Run(k.name, func(t *testing.T) {
			dir := t.TempDir()
			collect := k.start(t, fs, dir, false)
			lookalike := ".f.txt.envd-upload-n" + strings.Repeat("0123456789abcdef", 2)
			mustWrite(t, filepath.Join(dir, lookalike), "mine")
			if err := os.Rename(filepath.Join(dir, lookalike), filepath.Join(dir, "f.txt")); err != nil {
				t.Fatal(err)
			}
			mustWrite(t, filepath.Join(dir, "plain.txt"), "hello")
			wantEvents(t, collect(),
				seq(lookalike, []string{"CREATE", "WRITE"}),
				seq(lookalike, []string{"RENAME"}),
				seq("f.txt", []string{"CREATE"}),
				seq("plain.txt", []string{"CREATE", "WRITE"}))
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	io.WriteString(zw, s)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// An upload that creates its directories inside a recursive watch races the
// watch of each new directory, so which of its events the kernel or the
// scan reports varies; a temporary name is never among them, and the file
// is announced once and written.
func TestUploadIntoNewDirsRecursive(t *testing.T) {
	srv := envdtest.Start(t)
	fs := client(srv, codecs[0].opts)
	for _, k := range watchKinds {
		t.Run(k.name, func(t *testing.T) {
			dir := t.TempDir()
			collect := k.start(t, fs, dir, true)
			for i := range 20 {
				target := filepath.Join(dir, fmt.Sprintf("d%d", i), "e", "f.txt")
				if code := uploadRaw(t, srv, target, "content"); code != 200 {
					t.Fatalf("upload: %d", code)
				}
			}
			got := collect()
			for i := range 20 {
				name := fmt.Sprintf("d%d/e/f.txt", i)
				if n := slices.Index(got, name+" CREATE"); n < 0 || slices.Index(got[n+1:], name+" CREATE") >= 0 ||
					!slices.Contains(got[n:], name+" WRITE") {
					t.Errorf("%s: want one CREATE followed by a WRITE in %q", name, got)
				}
			}
			for _, ev := range got {
				if strings.Contains(ev, ".envd-upload-") {
					t.Fatalf("temporary name reported: %q", got)
				}
			}
		})
	}
}
