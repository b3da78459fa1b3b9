package fsapi_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/envdtest"
	fspb "github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
	"github.com/envd-dev/envd/internal/testkit"
)

type watchStream = connect.ServerStreamForClient[fspb.WatchDirResponse]

// openWatch starts WatchDir and checks that start is the first message.
func openWatch(t *testing.T, fs filesystemconnect.FilesystemClient, req *fspb.WatchDirRequest) *watchStream {
	t.Helper()
	st, err := fs.WatchDir(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if !st.Receive() {
		t.Fatalf("no start event: %v", st.Err())
	}
	if st.Msg().GetStart() == nil {
		t.Fatalf("first message %v, want start", st.Msg())
	}
	return st
}

// until collects filesystem events until stop is true.
func until(t *testing.T, st *watchStream, stop func(*fspb.FilesystemEvent) bool) []*fspb.FilesystemEvent {
	t.Helper()
	var got []*fspb.FilesystemEvent
	for st.Receive() {
		ev := st.Msg().GetFilesystem()
		if ev == nil {
			continue
		}
		got = append(got, ev)
		if stop(ev) {
			return got
		}
	}
	t.Fatalf("stream ended after %d events: %v", len(got), st.Err())
	return nil
}

func named(name string, typ fspb.EventType) func(*fspb.FilesystemEvent) bool {
	return func(ev *fspb.FilesystemEvent) bool { return ev.GetName() == name && ev.GetType() == typ }
}

// WatchDir over both codecs: start first, names relative to the watched dir,
// CREATE before WRITE, recursive pick-up of new directories, include_entry
// only on CREATE/WRITE/CHMOD with an absolute path.
func TestWatchDir(t *testing.T) {
	srv := envdtest.Start(t)
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			st := openWatch(t, client(srv, c.opts), &fspb.WatchDirRequest{Path: dir, Recursive: true, IncludeEntry: true})

			// The file is written once its directory is watched, so the
			// kernel reports the WRITE itself (see TestWatchDirCompleteness
			// for files racing a new directory's watch).
			if err := os.MkdirAll(filepath.Join(dir, "nested", "deeper"), 0o755); err != nil {
				t.Fatal(err)
			}
			got := until(t, st, named("nested/deeper", fspb.EventType_EVENT_TYPE_CREATE))
			mustWrite(t, filepath.Join(dir, "nested", "deeper", "file.txt"), "hello")
			if err := os.Chmod(filepath.Join(dir, "nested", "deeper", "file.txt"), 0o600); err != nil {
				t.Fatal(err)
			}
			// Entries are read when the event is sent, so keep the file
			// until its events are in.
			got = append(got, until(t, st, named("nested/deeper/file.txt", fspb.EventType_EVENT_TYPE_CHMOD))...)
			if err := os.Remove(filepath.Join(dir, "nested", "deeper", "file.txt")); err != nil {
				t.Fatal(err)
			}
			got = append(got, until(t, st, named("nested/deeper/file.txt", fspb.EventType_EVENT_TYPE_REMOVE))...)

			var seq []string
			for _, ev := range got {
				seq = append(seq, ev.GetType().String()+" "+ev.GetName())
				abs := filepath.Join(dir, ev.GetName())
				switch ev.GetType() {
				case fspb.EventType_EVENT_TYPE_REMOVE, fspb.EventType_EVENT_TYPE_RENAME:
					if ev.Entry != nil {
						t.Errorf("%s carries an entry", ev.GetType())
					}
				default:
					if ev.GetEntry().GetPath() != abs {
						t.Errorf("%s %s: entry path %q, want %q", ev.GetType(), ev.GetName(), ev.GetEntry().GetPath(), abs)
					}
				}
			}
			want := []string{
				"EVENT_TYPE_CREATE nested", "EVENT_TYPE_CREATE nested/deeper", "EVENT_TYPE_CREATE nested/deeper/file.txt",
				"EVENT_TYPE_WRITE nested/deeper/file.txt", "EVENT_TYPE_CHMOD nested/deeper/file.txt", "EVENT_TYPE_REMOVE nested/deeper/file.txt",
			}
			if strings.Join(seq, ",") != strings.Join(want, ",") {
				t.Errorf("events\n%s\nwant\n%s", strings.Join(seq, "\n"), strings.Join(want, "\n"))
			}
			if e := got[2].GetEntry(); e.GetType() != fspb.FileType_FILE_TYPE_FILE || e.GetName() != "file.txt" {
				t.Errorf("CREATE entry = %v", e)
			}
		})
	}
}

// Without include_entry no entry is attached; without recursive nothing
// below the first level is reported.
func TestWatchDirPlain(t *testing.T) {
	srv := envdtest.Start(t)
	dir := t.TempDir()
	st := openWatch(t, client(srv, nil), &fspb.WatchDirRequest{Path: dir})
	mustWrite(t, filepath.Join(dir, "sub", "inner.txt"), "x")
	mustWrite(t, filepath.Join(dir, "marker"), "x")
	got := until(t, st, named("marker", fspb.EventType_EVENT_TYPE_WRITE))
	for _, ev := range got {
		if ev.Entry != nil {
			t.Errorf("entry without include_entry: %v", ev)
		}
		if strings.Contains(ev.GetName(), "/") {
			t.Errorf("non-recursive watch reported %q", ev.GetName())
		}
	}
}

// A keepalive arrives at the Keepalive-Ping-Interval the client asked for.
func TestWatchDirKeepalive(t *testing.T) {
	srv := envdtest.Start(t)
	st := openWatch(t, client(srv, nil, "Keepalive-Ping-Interval", "1"), &fspb.WatchDirRequest{Path: t.TempDir()})
	if !st.Receive() {
		t.Fatalf("stream ended: %v", st.Err())
	}
	if st.Msg().GetKeepalive() == nil {
		t.Fatalf("got %v, want keepalive", st.Msg())
	}
}

// 1,000 files created as fast as possible, spread over directories created
// after the watch started, over the wire: every CREATE arrives exactly once
// and before that file's WRITE.
func TestWatchDirCompleteness(t *testing.T) {
	srv := envdtest.Start(t)
	dir := t.TempDir()
	st := openWatch(t, client(srv, []connect.ClientOption{connect.WithProtoJSON()}), &fspb.WatchDirRequest{Path: dir, Recursive: true})

	var names []string
	for i := range 1000 {
		rel := "f" + strconv.Itoa(i)
		if i%2 == 1 {
			rel = filepath.Join("d"+strconv.Itoa(i%20), "sub", rel)
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, rel), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, rel)
	}
	mustWrite(t, filepath.Join(dir, "zz-done"), "")
	got := until(t, st, named("zz-done", fspb.EventType_EVENT_TYPE_CREATE))

	creates := map[string]int{}
	createdAt := map[string]int{}
	for i, ev := range got {
		switch ev.GetType() {
		case fspb.EventType_EVENT_TYPE_CREATE:
			creates[ev.GetName()]++
			createdAt[ev.GetName()] = i
		case fspb.EventType_EVENT_TYPE_WRITE:
			if at, ok := createdAt[ev.GetName()]; !ok || at > i {
				t.Errorf("WRITE %s before its CREATE", ev.GetName())
			}
		}
	}
	for _, n := range names {
		if creates[n] != 1 {
			t.Errorf("%s: %d CREATE events, want 1", n, creates[n])
		}
	}
	for i := 1; i < 20; i += 2 {
		for _, d := range []string{"d" + strconv.Itoa(i), "d" + strconv.Itoa(i) + "/sub"} {
			if creates[d] != 1 {
				t.Errorf("new directory %s: %d CREATE events, want 1", d, creates[d])
			}
		}
	}
}

var watcherIDPattern = regexp.MustCompile(`^w[a-z0-9]{20}$`)

// Polling watchers: id format, events returned once and cleared, removal.
func TestPollingWatcher(t *testing.T) {
	srv := envdtest.Start(t)
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			fs := client(srv, c.opts)
			dir := t.TempDir()
			cw, err := fs.CreateWatcher(t.Context(), &fspb.CreateWatcherRequest{Path: dir, Recursive: true, IncludeEntry: true})
			if err != nil {
				t.Fatal(err)
			}
			id := cw.GetWatcherId()
			if !watcherIDPattern.MatchString(id) {
				t.Fatalf("watcher id %q does not match %s", id, watcherIDPattern)
			}
			mustWrite(t, filepath.Join(dir, "sub", "a.txt"), "x")
			mustWrite(t, filepath.Join(dir, "marker"), "")

			var got []*fspb.FilesystemEvent
			for !hasEvent(got, "marker", fspb.EventType_EVENT_TYPE_CREATE) {
				resp, err := fs.GetWatcherEvents(t.Context(), &fspb.GetWatcherEventsRequest{WatcherId: id})
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, resp.GetEvents()...)
				if len(resp.GetEvents()) == 0 {
					time.Sleep(10 * time.Millisecond) // polling pace, not an assertion
				}
			}
			for _, want := range []string{"sub", "sub/a.txt"} {
				if !hasEvent(got, want, fspb.EventType_EVENT_TYPE_CREATE) {
					t.Errorf("missing CREATE %s in %v", want, got)
				}
			}
			for _, ev := range got {
				if ev.GetName() == "sub/a.txt" && ev.GetType() == fspb.EventType_EVENT_TYPE_CREATE && ev.GetEntry().GetPath() != filepath.Join(dir, "sub/a.txt") {
					t.Errorf("entry = %v", ev.GetEntry())
				}
			}
			// Returned events are cleared: nothing new happened, nothing comes back.
			resp, err := fs.GetWatcherEvents(t.Context(), &fspb.GetWatcherEventsRequest{WatcherId: id})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetEvents()) != 0 {
				t.Errorf("events returned twice: %v", resp.GetEvents())
			}
			if _, err := fs.RemoveWatcher(t.Context(), &fspb.RemoveWatcherRequest{WatcherId: id}); err != nil {
				t.Fatal(err)
			}
			_, err = fs.GetWatcherEvents(t.Context(), &fspb.GetWatcherEventsRequest{WatcherId: id})
			wantCode(t, "GetWatcherEvents after remove", err, connect.CodeNotFound)
			_, err = fs.RemoveWatcher(t.Context(), &fspb.RemoveWatcherRequest{WatcherId: id})
			wantCode(t, "RemoveWatcher twice", err, connect.CodeNotFound)
		})
	}
}

func hasEvent(evs []*fspb.FilesystemEvent, name string, typ fspb.EventType) bool {
	for _, ev := range evs {
		if ev.GetName() == name && ev.GetType() == typ {
			return true
		}
	}
	return false
}

// Watches refuse a FUSE mount (a real one, served in-process) unless
// allow_network_mounts is set.
func TestWatchNetworkMount(t *testing.T) {
	dir := testkit.MountFUSE(t)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != 0x65735546 {
		t.Fatalf("statfs type of the FUSE mount = %#x", st.Type)
	}
	srv := envdtest.Start(t)
	for _, c := range codecs {
		fs := client(srv, c.opts)
		w, err := fs.WatchDir(t.Context(), &fspb.WatchDirRequest{Path: dir})
		if err != nil {
			t.Fatal(err)
		}
		for w.Receive() {
			t.Errorf("%s: WatchDir on FUSE sent %v", c.name, w.Msg())
		}
		wantCode(t, c.name+" WatchDir on FUSE", w.Err(), connect.CodeInvalidArgument)
		w.Close()
		_, err = fs.CreateWatcher(t.Context(), &fspb.CreateWatcherRequest{Path: dir, Recursive: true})
		wantCode(t, c.name+" CreateWatcher on FUSE", err, connect.CodeInvalidArgument)

		openWatch(t, fs, &fspb.WatchDirRequest{Path: dir, AllowNetworkMounts: true})
		cw, err := fs.CreateWatcher(t.Context(), &fspb.CreateWatcherRequest{Path: dir, AllowNetworkMounts: true})
		if err != nil {
			t.Fatalf("%s: CreateWatcher with allow_network_mounts: %v", c.name, err)
		}
		if _, err := fs.RemoveWatcher(t.Context(), &fspb.RemoveWatcherRequest{WatcherId: cw.GetWatcherId()}); err != nil {
			t.Fatal(err)
		}
	}
}
