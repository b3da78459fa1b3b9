package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/client"
	"github.com/envd-dev/envd/internal/envdtest"
)

func newClient(t *testing.T, opts ...client.Option) (*client.Client, *envdtest.Server) {
	t.Helper()
	s := envdtest.Start(t)
	return s.NewClient(t, opts...), s
}

func TestRunOutputAndExit(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	res, err := c.Run(ctx, client.Cmd{Cmd: "/bin/sh", Args: []string{"-c", "printf out; printf err >&2; exit 7"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "out" || string(res.Stderr) != "err" || res.Code != 7 || !res.Exited || res.ShellCode() != 7 || res.PID == 0 {
		t.Fatalf("got %+v, stdout %q stderr %q", res.Exit, res.Stdout, res.Stderr)
	}
	res, err = c.Run(ctx, client.Cmd{Cmd: "/bin/sh", Args: []string{"-c", "pwd; echo $FOO"}, Dir: "/tmp", Env: map[string]string{"FOO": "bar"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "/tmp\nbar\n" {
		t.Fatalf("stdout %q", res.Stdout)
	}
	// A missing cwd is the caller's mistake.
	_, err = c.Run(ctx, client.Cmd{Cmd: "true", Dir: "/no/such/dir"})
	if !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("missing cwd: %v, want ErrInvalidArgument", err)
	}
}

func TestSignalConnectListByTag(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	p, err := c.Start(ctx, client.Cmd{Cmd: "sleep", Args: []string{"1000"}, Tag: "sleeper"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(list, func(i client.ProcessInfo) bool {
		return i.PID == p.PID && i.Tag == "sleeper" && i.Cmd == "sleep" && slices.Equal(i.Args, []string{"1000"})
	}) {
		t.Fatalf("List %+v lacks pid %d", list, p.PID)
	}
	q, err := c.Connect(ctx, client.Tag("sleeper"))
	if err != nil {
		t.Fatal(err)
	}
	if q.PID != p.PID {
		t.Fatalf("Connect by tag: pid %d, want %d", q.PID, p.PID)
	}
	if err := c.Signal(ctx, client.Tag("sleeper"), client.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*client.Process{p, q} {
		x, err := h.Wait(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if x.Exited || x.Signal != 9 || x.ShellCode() != 137 {
			t.Fatalf("after SIGKILL: %+v", x)
		}
	}
	if err := c.Signal(ctx, client.PID(p.PID), client.SIGTERM); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("signal to a dead pid: %v, want ErrNotFound", err)
	}
	if _, err := c.Connect(ctx, client.Tag("no-such-tag")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Connect unknown tag: %v, want ErrNotFound", err)
	}
	if err := c.Signal(ctx, client.PID(1), client.Signal(99)); err == nil {
		t.Fatal("signal 99 to a pid envd did not start: no error")
	}
}

// One MiB through cat by the stdin writer, and by SendInput + CloseStdin.
func TestStdin(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	data := make([]byte, 1<<20)
	rand.Read(data)
	p, err := c.Start(ctx, client.Cmd{Cmd: "cat"})
	if err != nil {
		t.Fatal(err)
	}
	in, err := p.Stdin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := in.Write(data)
		if err == nil {
			err = in.Close()
		}
		errc <- err
	}()
	var out bytes.Buffer
	x, err := p.Wait(&out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if x.Code != 0 || sha256.Sum256(out.Bytes()) != sha256.Sum256(data) {
		t.Fatalf("exit %+v, %d bytes back of %d", x, out.Len(), len(data))
	}

	p, err = c.Start(ctx, client.Cmd{Cmd: "cat"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SendInput(ctx, []byte("one ")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendInput(ctx, client.PID(p.PID), []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := p.CloseStdin(ctx); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if _, err := p.Wait(&out, nil); err != nil {
		t.Fatal(err)
	}
	if out.String() != "one two" {
		t.Fatalf("cat gave %q", out.String())
	}

	p, err = c.Start(ctx, client.Cmd{Cmd: "cat", NoStdin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.SendInput(ctx, []byte("x")); err == nil {
		t.Fatal("input to a process without stdin: no error")
	}
}

func TestPTYResize(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	p, err := c.Start(ctx, client.Cmd{Cmd: "/bin/sh", PTY: &client.Size{Cols: 80, Rows: 24}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Resize(ctx, client.Size{Cols: 123, Rows: 45}); err != nil {
		t.Fatal(err)
	}
	if err := p.SendInput(ctx, []byte("stty size; exit 5\n")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	x, err := p.Wait(&out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "45 123") || x.Code != 5 {
		t.Fatalf("pty output %q, exit %+v", out.String(), x)
	}
	if err := c.Resize(ctx, client.PID(999999), client.Size{Cols: 1, Rows: 1}); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("resize unknown pid: %v", err)
	}
}

func TestUploadDownload(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	dir := t.TempDir()
	data := make([]byte, 3<<20+17)
	rand.Read(data)
	for _, gz := range []bool{false, true} {
		path := filepath.Join(dir, "sub", "f.bin")
		var opts []client.FileOption
		if gz {
			opts = append(opts, client.Gzip())
		}
		var sent, total int64
		up := append(opts, client.Length(int64(len(data))), client.OnProgress(func(d, n int64) { sent, total = d, n }))
		info, err := c.Upload(ctx, path, bytes.NewReader(data), up...)
		if err != nil {
			t.Fatal(err)
		}
		if info.Path != path || info.Type != "file" || sent != int64(len(data)) || total != int64(len(data)) {
			t.Fatalf("gzip %v: %+v, progress %d/%d", gz, info, sent, total)
		}
		onDisk, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(onDisk, data) {
			t.Fatalf("gzip %v: file on disk differs (%v)", gz, err)
		}
		var got bytes.Buffer
		var recv int64
		n, err := c.Download(ctx, path, &got, append(opts, client.OnProgress(func(d, _ int64) { recv = d }))...)
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(len(data)) || recv != n || !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("gzip %v: downloaded %d bytes (progress %d), equal %v", gz, n, recv, bytes.Equal(got.Bytes(), data))
		}
	}
	path := filepath.Join(dir, "sub", "f.bin")
	var part bytes.Buffer
	if _, err := c.Download(ctx, path, &part, client.Range(1000, 10)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(part.Bytes(), data[1000:1010]) {
		t.Fatal("Range(1000, 10) returned other bytes")
	}
	part.Reset()
	if _, err := c.Download(ctx, path, &part, client.Range(int64(len(data))-5, -1)); err != nil || !bytes.Equal(part.Bytes(), data[len(data)-5:]) {
		t.Fatalf("open-ended range: %v", err)
	}
	if _, err := c.Download(ctx, path, io.Discard, client.Range(int64(len(data))+10, 1)); !errors.Is(err, client.ErrRangeNotSatisfiable) {
		t.Fatalf("range past the end: %v", err)
	}
	// An unknown-length upload (chunked) and an empty one.
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte("piped")); pw.Close() }()
	if _, err := c.Upload(ctx, filepath.Join(dir, "piped"), pr); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Upload(ctx, filepath.Join(dir, "empty"), bytes.NewReader(nil), client.Length(0)); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"piped": "piped", "empty": ""} {
		var b bytes.Buffer
		if _, err := c.Download(ctx, filepath.Join(dir, name), &b); err != nil || b.String() != want {
			t.Fatalf("%s: %q, %v", name, b.String(), err)
		}
	}
	// Metadata is stored and read back (when the filesystem has user xattrs).
	info, err := c.Upload(ctx, filepath.Join(dir, "meta"), strings.NewReader("m"), client.Metadata(map[string]string{"owner": "ci"}))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := c.Stat(ctx, info.Path); err != nil || st.Metadata["owner"] != info.Metadata["owner"] {
		t.Fatalf("metadata: upload says %v, Stat %+v, %v", info.Metadata, st, err)
	}
	// As another user: the file is theirs.
	if _, err := c.As("nobody").Upload(ctx, filepath.Join(dir, "theirs"), strings.NewReader("n")); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Stat(ctx, filepath.Join(dir, "theirs")); err != nil || st.Owner != "nobody" {
		t.Fatalf("upload as nobody: %+v, %v", st, err)
	}
	if _, err := c.As("no-such-user").Upload(ctx, filepath.Join(dir, "x"), strings.NewReader("n")); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("upload as an unknown user: %v", err)
	}
	// Bad inputs.
	if _, err := c.Download(ctx, dir, io.Discard); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("download a directory: %v", err)
	}
	if _, err := c.Download(ctx, filepath.Join(dir, "missing"), io.Discard); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("download missing: %v", err)
	}
	if _, err := c.Upload(ctx, dir, strings.NewReader("x")); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("upload onto a directory: %v", err)
	}
	if _, err := c.Upload(ctx, filepath.Join(dir, "bad"), strings.NewReader("x"), client.Metadata(map[string]string{"k": "caf\u00e9"})); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("upload with unprintable metadata: %v", err)
	}
	// envd's own limit: keys of at most 246 bytes.
	if _, err := c.Upload(ctx, filepath.Join(dir, "bad"), strings.NewReader("x"), client.Metadata(map[string]string{strings.Repeat("k", 247): "v"})); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("upload with a 247-byte metadata key: %v", err)
	}
}

func TestFilesystem(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	dir := t.TempDir()
	e, err := c.MakeDir(ctx, filepath.Join(dir, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != client.TypeDir || e.Name != "b" || e.Owner != "root" {
		t.Fatalf("MakeDir entry %+v", e)
	}
	if _, err := c.MakeDir(ctx, filepath.Join(dir, "a")); !errors.Is(err, client.ErrAlreadyExists) {
		t.Fatalf("MakeDir existing: %v", err)
	}
	if _, err := c.Upload(ctx, filepath.Join(dir, "a", "f"), strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	st, err := c.Stat(ctx, filepath.Join(dir, "a", "f"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Type != client.TypeFile || st.Size != 5 || st.Mode.Perm() != 0o644 || st.ModTime.IsZero() {
		t.Fatalf("Stat %+v", st)
	}
	list, err := c.ListDir(ctx, dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range list {
		names = append(names, strings.TrimPrefix(e.Path, dir+"/"))
	}
	if !slices.Equal(names, []string{"a", "a/b", "a/f"}) {
		t.Fatalf("ListDir depth 2: %v", names)
	}
	list, err = c.ListDir(ctx, dir, 0)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListDir depth 0 (=1): %v, %v", list, err)
	}
	mv, err := c.Move(ctx, filepath.Join(dir, "a", "f"), filepath.Join(dir, "c", "g"))
	if err != nil || mv.Path != filepath.Join(dir, "c", "g") {
		t.Fatalf("Move: %+v, %v", mv, err)
	}
	if _, err := c.Move(ctx, filepath.Join(dir, "a", "f"), filepath.Join(dir, "x")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Move missing: %v", err)
	}
	if _, err := c.ListDir(ctx, filepath.Join(dir, "c", "g"), 1); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("ListDir of a file: %v", err)
	}
	if err := c.Remove(ctx, filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, filepath.Join(dir, "a")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Stat removed: %v", err)
	}
	if err := c.Remove(ctx, filepath.Join(dir, "a")); err != nil {
		t.Fatalf("Remove missing: %v", err)
	}
}

func TestWatch(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	dir := t.TempDir()
	w, err := c.Watch(ctx, dir, client.WatchOptions{Recursive: true, IncludeEntry: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.MakeDir(ctx, filepath.Join(dir, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for ev := range w.Events() {
		if ev.Name == "d/f" && ev.Op == client.OpWrite {
			if ev.Entry == nil || ev.Entry.Type != client.TypeFile {
				t.Fatalf("write event without its entry: %+v", ev)
			}
			break
		}
	}
	w.Close()
	if _, ok := <-w.Events(); ok {
		t.Fatal("Events still open after Close")
	}
	if err := w.Err(); err != nil {
		t.Fatalf("Err after Close: %v", err)
	}
	if _, err := c.Watch(ctx, filepath.Join(dir, "missing"), client.WatchOptions{}); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("watch missing: %v", err)
	}
	if _, err := c.Watch(ctx, filepath.Join(dir, "d", "f"), client.WatchOptions{}); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("watch a file: %v", err)
	}
}

func TestInitTokenUserSignedURL(t *testing.T) {
	c, s := newClient(t)
	ctx := context.Background()
	v, err := c.WaitHealthy(ctx, 0)
	if err != nil || v != "0.7.0" {
		t.Fatalf("WaitHealthy: %q, %v", v, err)
	}
	if err := c.Init(ctx, client.InitOptions{AccessToken: "tok", EnvVars: map[string]string{"A": "b"}, Timestamp: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(ctx); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("RPC without the token: %v", err)
	}
	if _, err := c.Envs(ctx); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("/envs without the token: %v", err)
	}
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("/health is exempt: %v", err)
	}
	tc, err := client.New(s.URL, client.WithHTTPClient(s.Client), client.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	envs, err := tc.Envs(ctx)
	if err != nil || envs["A"] != "b" {
		t.Fatalf("Envs %v, %v", envs, err)
	}
	m, err := tc.Metrics(ctx)
	if err != nil || m.CPUCount == 0 || m.MemTotal == 0 {
		t.Fatalf("Metrics %+v, %v", m, err)
	}
	if _, err := tc.As("no-such-user").List(ctx); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("unknown Basic user: %v", err)
	}
	res, err := tc.As("nobody").Run(ctx, client.Cmd{Cmd: "id", Args: []string{"-un"}, Dir: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(res.Stdout)) != "nobody" {
		t.Fatalf("As(nobody) runs as %q, %v", res.Stdout, err)
	}
	// A signed URL reads without the token; a tampered or expired one does not.
	path := filepath.Join(t.TempDir(), "signed")
	if _, err := tc.Upload(ctx, path, strings.NewReader("signed body")); err != nil {
		t.Fatal(err)
	}
	get := func(u string) (int, string) {
		res, err := s.Client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get(tc.SignedURL(path, client.Read, "", time.Now().Add(time.Hour))); code != 200 || body != "signed body" {
		t.Fatalf("signed GET: %d %q", code, body)
	}
	if code, _ := get(tc.SignedURL(path, client.Read, "", time.Time{})); code != 200 {
		t.Fatalf("signed GET without expiry: %d", code)
	}
	if code, _ := get(tc.SignedURL(path, client.Write, "", time.Time{})); code != 401 {
		t.Fatalf("write-signed URL used to read: %d, want 401", code)
	}
	if code, _ := get(tc.SignedURL(path, client.Read, "", time.Now().Add(-time.Hour))); code != 401 {
		t.Fatalf("expired URL: %d, want 401", code)
	}
	req, _ := http.NewRequest(http.MethodPost, tc.SignedURL(path, client.Write, "", time.Now().Add(time.Hour)), strings.NewReader("new"))
	req.Header.Set("Content-Type", "application/octet-stream")
	up, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	up.Body.Close()
	if b, _ := os.ReadFile(path); up.StatusCode != 200 || string(b) != "new" {
		t.Fatalf("signed POST: %d, file %q", up.StatusCode, b)
	}
	if err := tc.SnapshotPrepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.SnapshotPrepare(ctx); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("snapshot/prepare without the token: %v", err)
	}
	// A second Init with another token is refused without MMDS.
	if err := tc.Init(ctx, client.InitOptions{AccessToken: "other"}); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("re-init with another token: %v", err)
	}
}

func TestUnreachableAndCancelled(t *testing.T) {
	c, s := newClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := c.Start(ctx, client.Cmd{Cmd: "sleep", Args: []string{"1000"}, Tag: "detached"})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := p.Recv(); !errors.Is(err, client.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv after cancel: %v", err)
	}
	// Detaching does not kill the process: reattach by PID, then kill it.
	q, err := c.Connect(context.Background(), client.PID(p.PID))
	if err != nil {
		t.Fatalf("Connect by pid after detach: %v", err)
	}
	if err := c.Signal(context.Background(), client.Tag("detached"), client.SIGKILL); err != nil {
		t.Fatalf("process gone after detach: %v", err)
	}
	if x, err := q.Wait(nil, nil); err != nil || x.Signal != 9 {
		t.Fatalf("reattached stream: %+v, %v", x, err)
	}
	if _, err := q.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after the end: %v, want io.EOF", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Health(context.Background()); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("stopped daemon: %v", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := c.WaitHealthy(short, 50*time.Millisecond); !errors.Is(err, client.ErrDeadlineExceeded) {
		t.Fatalf("WaitHealthy on a stopped daemon: %v", err)
	}
	if _, err := client.New("localhost:49983"); err == nil {
		t.Fatal("URL without scheme accepted")
	}
}
