package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fspb "github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
	procpb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
)

// The seed's bug (§17 #1): the Rust rewrite applied /init's defaultUser and
// defaultWorkdir to a copy, so everything kept running as root in the wrong
// place. After /init, every later process, filesystem RPC and upload must use
// them, with no user named in the request.
func TestInitDefaultsReachEverything(t *testing.T) {
	u := addUser(t)
	c := start(t)
	work := filepath.Join(u.Home, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(work, int(u.UID), int(u.GID))
	c.init(fmt.Sprintf(`{"defaultUser":%q,"defaultWorkdir":%q}`, u.Name, work))

	// Upload, relative path, no username: under the user's home, owned by the user,
	// created parents too.
	resp, body := c.do("POST", "/files?path="+url.QueryEscape("new/dir/up.txt"), strings.NewReader("hi"),
		"Content-Type", "application/octet-stream")
	up := filepath.Join(u.Home, "new", "dir", "up.txt")
	wantEntries(t, resp, body, up)
	for _, p := range []string{up, filepath.Join(u.Home, "new", "dir"), filepath.Join(u.Home, "new")} {
		if uid, gid, _ := owner(t, p); uid != u.UID || gid != u.GID {
			t.Errorf("%s owned by %d:%d, want %s (%d:%d)", p, uid, gid, u.Name, u.UID, u.GID)
		}
	}
	// Multipart, absolute path outside home: still the user's.
	abs := filepath.Join(t.TempDir(), "made", "m.txt")
	ct, mp := multipartBody(t, part{"file", abs, "m"})
	resp, body = c.do("POST", "/files", bytes.NewReader(mp), "Content-Type", ct)
	wantEntries(t, resp, body, abs)
	if uid, _, _ := owner(t, abs); uid != u.UID {
		t.Errorf("multipart upload owned by %d", uid)
	}
	if uid, _, _ := owner(t, filepath.Dir(abs)); uid != u.UID {
		t.Errorf("multipart parent owned by %d", uid)
	}
	// Empty path resolves to the default workdir: a directory.
	resp, body = c.do("POST", "/files?path=", strings.NewReader("x"), "Content-Type", "application/octet-stream")
	wantJSONError(t, resp, body, 400, "path is a directory: "+work)
	// Download relative to the user's home.
	if resp, body := c.do("GET", "/files?path=new/dir/up.txt", nil); resp.StatusCode != 200 || string(body) != "hi" {
		t.Errorf("download: %d %q", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Filesystem RPC: relative MakeDir lands in the user's home, owned by them.
	fsc := filesystemconnect.NewFilesystemClient(c.s.Client, c.s.URL)
	mk, err := fsc.MakeDir(ctx, &fspb.MakeDirRequest{Path: "rpcdir"})
	if err != nil {
		t.Fatal(err)
	}
	if mk.Entry.GetPath() != filepath.Join(u.Home, "rpcdir") || mk.Entry.GetOwner() != u.Name {
		t.Errorf("MakeDir: %+v", mk.Entry)
	}

	// Process: runs as the user, in the default workdir, with the user's HOME.
	pc := processconnect.NewProcessClient(c.s.Client, c.s.URL)
	stdin := false
	stream, err := pc.Start(ctx, &procpb.StartRequest{
		Process: &procpb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", `echo "$(id -un) $(pwd) $HOME"`}},
		Stdin:   &stdin,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	exit := int32(-1)
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		out.Write(ev.GetData().GetStdout())
		if end := ev.GetEnd(); end != nil {
			exit = end.GetExitCode()
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s %s %s\n", u.Name, work, u.Home)
	if out.String() != want || exit != 0 {
		t.Fatalf("process printed %q (exit %d), want %q", out.String(), exit, want)
	}
}
