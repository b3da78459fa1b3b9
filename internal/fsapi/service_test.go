package fsapi

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/execenv"
	fspb "github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
)

// serve mounts s alone on an httptest server (default user root).
func serve(t *testing.T, s *Service) filesystemconnect.FilesystemClient {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(filesystemconnect.NewFilesystemHandler(s))
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return filesystemconnect.NewFilesystemClient(hs.Client(), hs.URL)
}

func newService() *Service {
	return New(execenv.NewEnv(""), slog.New(slog.DiscardHandler))
}

// A polling watcher nobody polls stops at MaxPending and says so: the
// buffered events come first, then the error, never a silent drop.
func TestPollingWatcherBacklog(t *testing.T) {
	s := newService()
	defer s.Close()
	s.MaxPending = 5
	fs := serve(t, s)
	dir := t.TempDir()
	cw, err := fs.CreateWatcher(t.Context(), &fspb.CreateWatcherRequest{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		f, err := os.Create(filepath.Join(dir, strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	// Nobody polls until the collector has hit the bound.
	s.mu.Lock()
	pw := s.watchers[cw.GetWatcherId()]
	s.mu.Unlock()
	for {
		pw.mu.Lock()
		failed := pw.err != nil
		pw.mu.Unlock()
		if failed {
			break
		}
		time.Sleep(5 * time.Millisecond) // waiting pace, not an assertion
	}
	resp, err := fs.GetWatcherEvents(t.Context(), &fspb.GetWatcherEventsRequest{WatcherId: cw.GetWatcherId()})
	if err != nil {
		t.Fatalf("first poll: %v, want the buffered events", err)
	}
	if len(resp.GetEvents()) != s.MaxPending {
		t.Errorf("%d events delivered, want the %d buffered", len(resp.GetEvents()), s.MaxPending)
	}
	_, err = fs.GetWatcherEvents(t.Context(), &fspb.GetWatcherEventsRequest{WatcherId: cw.GetWatcherId()})
	if connect.CodeOf(err) != connect.CodeAborted {
		t.Errorf("poll after the buffer drained: %v, want Aborted", err)
	}
	// The failure is sticky until the watcher is removed.
	_, err = fs.GetWatcherEvents(t.Context(), &fspb.GetWatcherEventsRequest{WatcherId: cw.GetWatcherId()})
	if connect.CodeOf(err) != connect.CodeAborted {
		t.Errorf("second poll: %v", err)
	}
	if _, err := fs.RemoveWatcher(t.Context(), &fspb.RemoveWatcherRequest{WatcherId: cw.GetWatcherId()}); err != nil {
		t.Fatal(err)
	}
}

// Close stops polling watchers and live WatchDir streams.
func TestCloseStopsWatchers(t *testing.T) {
	s := newService()
	fs := serve(t, s)
	dir := t.TempDir()
	cw, err := fs.CreateWatcher(t.Context(), &fspb.CreateWatcherRequest{Path: dir, Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := fs.WatchDir(t.Context(), &fspb.WatchDirRequest{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !st.Receive() || st.Msg().GetStart() == nil {
		t.Fatalf("no start event: %v", st.Err())
	}

	s.Close() // returns only once every polling watcher goroutine ended

	for st.Receive() {
	}
	if connect.CodeOf(st.Err()) != connect.CodeCanceled {
		t.Errorf("WatchDir ended with %v, want Canceled", st.Err())
	}
	_, err = fs.GetWatcherEvents(t.Context(), &fspb.GetWatcherEventsRequest{WatcherId: cw.GetWatcherId()})
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("watcher after Close: %v, want NotFound", err)
	}
	_, err = fs.CreateWatcher(t.Context(), &fspb.CreateWatcherRequest{Path: dir})
	if connect.CodeOf(err) != connect.CodeCanceled {
		t.Errorf("CreateWatcher after Close: %v, want Canceled", err)
	}
}

func TestWatcherID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := watcherID()
		if len(id) != 21 || id[0] != 'w' {
			t.Fatalf("id %q", id)
		}
		for _, c := range id[1:] {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
				t.Fatalf("id %q has %q", id, c)
			}
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}
