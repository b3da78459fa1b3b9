package fsapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/envdtest"
	"github.com/envd-dev/envd/internal/fsmeta"
	fspb "github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/testkit"
)

// Stat and ListDir over both codecs: every EntryInfo field of §9.1, the Go
// walk order, depth, requested-path naming and metadata.
func TestStatAndListDir(t *testing.T) {
	srv := envdtest.Start(t)
	dir := t.TempDir()
	testkit.RequireXattrs(t, dir)
	mustWrite(t, filepath.Join(dir, "file1.txt"), "hello")
	if err := os.Chmod(filepath.Join(dir, "file1.txt"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fsmeta.Replace(filepath.Join(dir, "file1.txt"), map[string]string{"project": "envd"}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("file1.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}

	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			fs := client(srv, c.opts)
			st, err := fs.Stat(t.Context(), &fspb.StatRequest{Path: filepath.Join(dir, "file1.txt")})
			if err != nil {
				t.Fatal(err)
			}
			e := st.GetEntry()
			if e.GetName() != "file1.txt" || e.GetType() != fspb.FileType_FILE_TYPE_FILE || e.GetPath() != filepath.Join(dir, "file1.txt") ||
				e.GetSize() != 5 || e.GetMode() != 0o644 || e.GetPermissions() != "-rw-r--r--" || e.GetOwner() != "root" ||
				e.GetGroup() != "root" || e.GetModifiedTime() == nil || e.SymlinkTarget != nil || e.GetMetadata()["project"] != "envd" {
				t.Errorf("Stat entry = %v", e)
			}
			st, err = fs.Stat(t.Context(), &fspb.StatRequest{Path: filepath.Join(dir, "link")})
			if err != nil {
				t.Fatal(err)
			}
			if e := st.GetEntry(); e.GetType() != fspb.FileType_FILE_TYPE_FILE || e.GetPermissions() != "Lrwxrwxrwx" ||
				e.GetSymlinkTarget() != filepath.Join(dir, "file1.txt") || e.GetMetadata()["project"] != "envd" {
				t.Errorf("Stat link = %v", e)
			}

			for _, tc := range []struct {
				depth uint32
				want  []string
			}{
				{0, []string{"file1.txt", "link", "subdir1", "subdir2"}},
				{2, []string{"file1.txt", "link", "subdir1", "subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2"}},
			} {
				ls, err := fs.ListDir(t.Context(), &fspb.ListDirRequest{Path: dir, Depth: tc.depth})
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, e := range ls.GetEntries() {
					got = append(got, strings.TrimPrefix(e.GetPath(), dir+"/"))
				}
				if strings.Join(got, ",") != strings.Join(tc.want, ",") {
					t.Errorf("depth %d: %v, want %v", tc.depth, got, tc.want)
				}
				if e := ls.GetEntries()[0]; e.GetMetadata()["project"] != "envd" {
					t.Errorf("ListDir metadata = %v", e.GetMetadata())
				}
				if e := ls.GetEntries()[2]; e.GetType() != fspb.FileType_FILE_TYPE_DIRECTORY || e.GetMode() != 0o755 ||
					e.GetPermissions() != "drwxr-xr-x" || e.GetSize() <= 0 || len(e.GetMetadata()) != 0 {
					t.Errorf("ListDir dir entry = %v", e)
				}
			}
		})
	}
}

// Relative and ~ paths resolve in the acting user's home; new directories
// (MakeDir, Move's destination parents) belong to that user; "" means the
// default workdir for Stat/ListDir.
func TestPathsAndOwnership(t *testing.T) {
	srv := envdtest.Start(t)
	u := testkit.AddUser(t, "fsapi")
	want := u.Uid + ":" + u.Gid
	fs := client(srv, nil, "Authorization", basic(u.Username))

	mk, err := fs.MakeDir(t.Context(), &fspb.MakeDirRequest{Path: "proj/a/b"})
	if err != nil {
		t.Fatal(err)
	}
	if mk.GetEntry().GetPath() != filepath.Join(u.HomeDir, "proj/a/b") || mk.GetEntry().GetOwner() != u.Username {
		t.Errorf("MakeDir entry = %v", mk.GetEntry())
	}
	for _, p := range []string{"proj", "proj/a", "proj/a/b"} {
		if got := ownerOf(t, filepath.Join(u.HomeDir, p)); got != want {
			t.Errorf("%s owned by %s, want %s", p, got, want)
		}
	}
	_, err = fs.MakeDir(t.Context(), &fspb.MakeDirRequest{Path: "~/proj/a/b"})
	wantCode(t, "MakeDir existing", err, connect.CodeAlreadyExists)

	mustWrite(t, filepath.Join(u.HomeDir, "proj", "f.txt"), "x")
	mv, err := fs.Move(t.Context(), &fspb.MoveRequest{Source: "~/proj/f.txt", Destination: "out/deep/g.txt"})
	if err != nil {
		t.Fatal(err)
	}
	if mv.GetEntry().GetPath() != filepath.Join(u.HomeDir, "out/deep/g.txt") || mv.GetEntry().GetType() != fspb.FileType_FILE_TYPE_FILE {
		t.Errorf("Move entry = %v", mv.GetEntry())
	}
	for _, p := range []string{"out", "out/deep"} {
		if got := ownerOf(t, filepath.Join(u.HomeDir, p)); got != want {
			t.Errorf("%s owned by %s, want %s", p, got, want)
		}
	}

	// "" is the home without a workdir, the workdir once /init set one.
	st, err := fs.Stat(t.Context(), &fspb.StatRequest{Path: ""})
	if err != nil || st.GetEntry().GetPath() != u.HomeDir {
		t.Errorf("Stat(\"\") = %v, %v; want %s", st.GetEntry(), err, u.HomeDir)
	}
	srv.Daemon.Env().SetDefaultWorkdir(filepath.Join(u.HomeDir, "proj"))
	ls, err := fs.ListDir(t.Context(), &fspb.ListDirRequest{Path: ""})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.GetEntries()) != 1 || ls.GetEntries()[0].GetPath() != filepath.Join(u.HomeDir, "proj", "a") {
		t.Errorf("ListDir(\"\") = %v", ls.GetEntries())
	}

	_, err = fs.Remove(t.Context(), &fspb.RemoveRequest{Path: "out"})
	wantCode(t, "Remove ~/out", err, 0)
	if _, err := os.Lstat(filepath.Join(u.HomeDir, "out")); !os.IsNotExist(err) {
		t.Errorf("out still exists: %v", err)
	}
	// The workdir survives: "" is refused, not read as the workdir.
	_, err = fs.Remove(t.Context(), &fspb.RemoveRequest{Path: ""})
	wantCode(t, "Remove empty", err, connect.CodeInvalidArgument)
	if _, err := os.Stat(filepath.Join(u.HomeDir, "proj", "a")); err != nil {
		t.Errorf("workdir damaged by Remove(\"\"): %v", err)
	}
}

// Move keeps user.e2b.* metadata, visible in the response entry.
func TestMoveKeepsMetadata(t *testing.T) {
	srv := envdtest.Start(t)
	dir := t.TempDir()
	testkit.RequireXattrs(t, dir)
	src := filepath.Join(dir, "a")
	mustWrite(t, src, "x")
	if err := fsmeta.Replace(src, map[string]string{"k1": "v1", "k2": "ü"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range codecs {
		dst := filepath.Join(dir, c.name, "b")
		mv, err := client(srv, c.opts).Move(t.Context(), &fspb.MoveRequest{Source: src, Destination: dst})
		if err != nil {
			t.Fatal(err)
		}
		if md := mv.GetEntry().GetMetadata(); md["k1"] != "v1" || md["k2"] != "ü" || len(md) != 2 {
			t.Errorf("%s: metadata after move = %v", c.name, md)
		}
		src = dst
	}
}

// Every bad input gets its own clear code, never Internal, and the daemon
// keeps serving.
func TestBadInputs(t *testing.T) {
	srv := envdtest.Start(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	mustWrite(t, file, "x")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(dir, strings.Repeat("n", 256))
	mustWrite(t, filepath.Join(dir, "full", "occupant"), "x")
	// rename(2) cannot cross filesystems; /dev/shm is a tmpfs, dir is not.
	otherFS, err := os.MkdirTemp("/dev/shm", "fsapi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(otherFS) })
	var a, b unix.Stat_t
	if err := unix.Stat(dir, &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(otherFS, &b); err != nil {
		t.Fatal(err)
	}
	if a.Dev == b.Dev {
		t.Fatalf("%s and %s are on the same filesystem", dir, otherFS)
	}
	nul := filepath.Join(dir, "a\x00b")

	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			fs := client(srv, c.opts)
			ctx := t.Context()
			stat := func(p string) error { _, err := fs.Stat(ctx, &fspb.StatRequest{Path: p}); return err }
			list := func(p string) error { _, err := fs.ListDir(ctx, &fspb.ListDirRequest{Path: p}); return err }
			mkdir := func(p string) error { _, err := fs.MakeDir(ctx, &fspb.MakeDirRequest{Path: p}); return err }
			rm := func(p string) error { _, err := fs.Remove(ctx, &fspb.RemoveRequest{Path: p}); return err }
			mv := func(s, d string) error {
				_, err := fs.Move(ctx, &fspb.MoveRequest{Source: s, Destination: d})
				return err
			}
			watch := func(p string) error {
				st, err := fs.WatchDir(ctx, &fspb.WatchDirRequest{Path: p})
				if err != nil {
					return err
				}
				defer st.Close()
				for st.Receive() {
				}
				return st.Err()
			}
			createWatcher := func(p string) error {
				_, err := fs.CreateWatcher(ctx, &fspb.CreateWatcherRequest{Path: p})
				return err
			}
			for _, tc := range []struct {
				name string
				err  error
				code connect.Code
			}{
				{"Remove empty path", rm(""), connect.CodeInvalidArgument},
				{"Move empty source", mv("", filepath.Join(dir, "x")), connect.CodeInvalidArgument},
				{"Move empty destination", mv(file, ""), connect.CodeInvalidArgument},
				{"Remove /", rm("/"), connect.CodeInvalidArgument},

				{"Stat name over 255 bytes", stat(long), connect.CodeInvalidArgument},
				{"MakeDir name over 255 bytes", mkdir(long), connect.CodeInvalidArgument},
				{"Move to name over 255 bytes", mv(file, long), connect.CodeInvalidArgument},
				{"Stat NUL byte", stat(nul), connect.CodeInvalidArgument},
				{"Remove NUL byte", rm(nul), connect.CodeInvalidArgument},
				{"Stat ~other", stat("~nobody/x"), connect.CodeInvalidArgument},

				{"Stat through symlink loop", stat(filepath.Join(loop, "x")), connect.CodeFailedPrecondition},
				{"ListDir symlink loop", list(loop), connect.CodeFailedPrecondition},
				{"MakeDir through symlink loop", mkdir(filepath.Join(loop, "x")), connect.CodeFailedPrecondition},
				{"WatchDir symlink loop", watch(loop), connect.CodeFailedPrecondition},

				{"Stat under a file", stat(filepath.Join(file, "x")), connect.CodeFailedPrecondition},
				{"ListDir under a file", list(filepath.Join(file, "x")), connect.CodeFailedPrecondition},
				{"MakeDir under a file", mkdir(filepath.Join(file, "x", "y")), connect.CodeFailedPrecondition},
				{"Move under a file", mv(filepath.Join(dir, "sub"), filepath.Join(file, "x")), connect.CodeFailedPrecondition},
				{"Remove under a file", rm(filepath.Join(file, "x")), connect.CodeFailedPrecondition},

				{"Stat missing", stat(filepath.Join(dir, "missing")), connect.CodeNotFound},
				{"ListDir missing", list(filepath.Join(dir, "missing")), connect.CodeNotFound},
				{"Move missing source", mv(filepath.Join(dir, "missing"), filepath.Join(dir, "y")), connect.CodeNotFound},
				{"WatchDir missing", watch(filepath.Join(dir, "missing")), connect.CodeNotFound},
				{"CreateWatcher missing", createWatcher(filepath.Join(dir, "missing")), connect.CodeNotFound},
				{"Remove missing", rm(filepath.Join(dir, "missing")), 0},

				{"MakeDir existing dir", mkdir(filepath.Join(dir, "sub")), connect.CodeAlreadyExists},
				{"MakeDir over a file", mkdir(file), connect.CodeInvalidArgument},
				{"ListDir a file", list(file), connect.CodeInvalidArgument},
				{"WatchDir a file", watch(file), connect.CodeInvalidArgument},
				{"CreateWatcher a file", createWatcher(file), connect.CodeInvalidArgument},
				{"Move dir into itself", mv(filepath.Join(dir, "sub"), filepath.Join(dir, "sub", "in")), connect.CodeInvalidArgument},
				{"Move file onto a dir", mv(file, filepath.Join(dir, "full")), connect.CodeAlreadyExists},
				{"Move dir onto a non-empty dir", mv(filepath.Join(dir, "sub"), filepath.Join(dir, "full")), connect.CodeAlreadyExists},
				{"Move across filesystems", mv(file, filepath.Join(otherFS, "moved")), connect.CodeFailedPrecondition},
			} {
				wantCode(t, tc.name, tc.err, tc.code)
			}
			_, err := fs.GetWatcherEvents(ctx, &fspb.GetWatcherEventsRequest{WatcherId: "wnope"})
			wantCode(t, "GetWatcherEvents unknown", err, connect.CodeNotFound)
			_, err = fs.RemoveWatcher(ctx, &fspb.RemoveWatcherRequest{WatcherId: "wnope"})
			wantCode(t, "RemoveWatcher unknown", err, connect.CodeNotFound)
		})
	}
	// Nothing above touched the tree it must not touch.
	if _, err := os.Stat(file); err != nil {
		t.Errorf("file damaged: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sub")); err != nil {
		t.Errorf("sub damaged: %v", err)
	}
	healthy(t, srv, dir)
}

// Invalid UTF-8 cannot be produced by a proto client, so send raw bodies.
func TestInvalidUTF8(t *testing.T) {
	srv := envdtest.Start(t)
	bad := "/tmp/bad\xffname"
	for _, tc := range []struct {
		name, contentType string
		body              []byte
	}{
		// field 1 (path), wire type 2: tag 0x0a, length, bytes.
		{"proto", "application/proto", append([]byte{0x0a, byte(len(bad))}, bad...)},
		{"json", "application/json", []byte(`{"path":"` + bad + `"}`)},
	} {
		for _, rpc := range []string{"Stat", "Remove", "MakeDir", "ListDir"} {
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/filesystem.Filesystem/"+rpc, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tc.contentType)
			resp, err := srv.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct{ Code, Message string }
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || body.Code != "invalid_argument" {
				t.Errorf("%s %s: HTTP %d %+v, want 400 invalid_argument", tc.name, rpc, resp.StatusCode, body)
			}
		}
	}
	healthy(t, srv, t.TempDir())
}

// PermissionDenied where the OS says EPERM: an immutable file cannot be
// removed even by root.
func TestPermissionDenied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chattr +i needs root")
	}
	srv := envdtest.Start(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "immutable")
	mustWrite(t, f, "x")
	if out, err := exec.Command("chattr", "+i", f).CombinedOutput(); err != nil {
		t.Skipf("filesystem of %s does not support the immutable attribute: %v: %s", dir, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", f).Run() })
	fs := client(srv, nil)
	_, err := fs.Remove(t.Context(), &fspb.RemoveRequest{Path: f})
	wantCode(t, "Remove immutable", err, connect.CodePermissionDenied)
	_, err = fs.Move(t.Context(), &fspb.MoveRequest{Source: f, Destination: filepath.Join(dir, "moved")})
	wantCode(t, "Move immutable", err, connect.CodePermissionDenied)
	if _, err := os.Stat(f); err != nil {
		t.Errorf("immutable file gone: %v", err)
	}
}

// healthy checks the daemon still answers /health and a real Stat.
func healthy(t *testing.T, srv *envdtest.Server, dir string) {
	t.Helper()
	resp, err := srv.Client.Get(srv.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/health = %d", resp.StatusCode)
	}
	if _, err := client(srv, nil).Stat(context.Background(), &fspb.StatRequest{Path: dir}); err != nil {
		t.Fatalf("Stat after bad inputs: %v", err)
	}
}

// Linux names are bytes, proto strings UTF-8: a file with a non-UTF-8 name
// must not break the listing or the watch that sees it.
func TestNonUTF8Names(t *testing.T) {
	srv := envdtest.Start(t)
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "bad\xffname"), "x")
	mustWrite(t, filepath.Join(dir, "good"), "x")
	for _, c := range codecs {
		fs := client(srv, c.opts)
		ls, err := fs.ListDir(t.Context(), &fspb.ListDirRequest{Path: dir})
		if err != nil {
			t.Fatalf("%s: ListDir: %v", c.name, err)
		}
		if n := len(ls.GetEntries()); n != 2 || ls.GetEntries()[0].GetName() != "bad\uFFFDname" || ls.GetEntries()[1].GetName() != "good" {
			t.Errorf("%s: entries %v", c.name, ls.GetEntries())
		}
		wdir := t.TempDir()
		st := openWatch(t, fs, &fspb.WatchDirRequest{Path: wdir, IncludeEntry: true})
		name := "new\xfe"
		mustWrite(t, filepath.Join(wdir, name), "")
		until(t, st, named(strings.ToValidUTF8(name, "\uFFFD"), fspb.EventType_EVENT_TYPE_CREATE))
	}
	healthy(t, srv, dir)
}

// Owner names are cached across requests, but a change of the user database
// shows in the next answer.
func TestOwnerNameFollowsUserDatabase(t *testing.T) {
	srv := envdtest.Start(t)
	u := testkit.AddUser(t, "fsapi")
	fs := client(srv, nil)
	path := filepath.Join(t.TempDir(), "owned")
	mustWrite(t, path, "x")
	uid, _ := strconv.Atoi(u.Uid)
	if err := os.Chown(path, uid, 0); err != nil {
		t.Fatal(err)
	}
	owner := func() string {
		t.Helper()
		st, err := fs.Stat(t.Context(), &fspb.StatRequest{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetEntry().GetOwner()
	}
	if got := owner(); got != u.Username {
		t.Fatalf("owner %q, want %q", got, u.Username)
	}
	renamed := u.Username + "r"
	testkit.Passwd(t, "usermod", "--login", renamed, u.Username)
	t.Cleanup(func() { _ = exec.Command("userdel", "--remove", renamed).Run() })
	if got := owner(); got != renamed {
		t.Errorf("owner after rename %q, want %q", got, renamed)
	}
}
