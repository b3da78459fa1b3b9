package fsapi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/execenv"
	fspb "github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
	"github.com/envd-dev/envd/internal/testkit"
)

// serve mounts s alone on an httptest server (default user root).
func serve(t *testing.T, s *Service) filesystemconnect.FilesystemClient {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(filesystemconnect.NewFilesystemHandler(s, HandlerOptions()...))
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return filesystemconnect.NewFilesystemClient(hs.Client(), hs.URL)
}

func newService() *Service {
	return New(execenv.NewEnv(""), nil, slog.New(slog.DiscardHandler))
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

// smallBufListener shrinks each accepted connection's send buffer, so a
// stalled client leaves the server blocked after a few KiB instead of after
// the megabytes loopback TCP would otherwise absorb.
type smallBufListener struct{ net.Listener }

func (l smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.SetWriteBuffer(4096); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// A client that stops reading a busy watch is told it missed events: the
// server's send blocks, the watcher's channel and then the kernel's inotify
// queue fill, and the real IN_Q_OVERFLOW ends the stream with Aborted.
// Nothing global changes: small socket buffers on both ends keep the events
// parked in TCP to a few thousand, and the event count covers the machine's
// own max_queued_events with room to spare.
func TestWatchDirOverflowSlowClient(t *testing.T) {
	limit := testkit.MaxQueuedEvents(t, 1<<20)
	s := newService()
	defer s.Close()
	mux := http.NewServeMux()
	mux.Handle(filesystemconnect.NewFilesystemHandler(s, HandlerOptions()...))
	hs := httptest.NewUnstartedServer(mux)
	hs.Listener = smallBufListener{hs.Listener}
	hs.Start()
	defer hs.Close()
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	fs := filesystemconnect.NewFilesystemClient(&http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}, hs.URL)

	// A guard against hanging the package if no overflow ever comes; not a
	// performance assertion.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	st, err := fs.WatchDir(ctx, &fspb.WatchDirRequest{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !st.Receive() || st.Msg().GetStart() == nil {
		t.Fatalf("no start event: %v", st.Err())
	}
	// Alternating chmods of two files: one CHMOD each, never coalesced.
	files := [2]string{filepath.Join(dir, "a"), filepath.Join(dir, "b")}
	for _, f := range files {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range limit + 64*1024 {
		if err := os.Chmod(files[i%2], 0o600|os.FileMode(i%2)); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for st.Receive() {
		n++
	}
	var ce *connect.Error
	if !errors.As(st.Err(), &ce) || ce.Code() != connect.CodeAborted || !strings.Contains(ce.Message(), "overflow") {
		t.Fatalf("stream ended with %v after %d messages, want Aborted overflow", st.Err(), n)
	}
	t.Logf("overflow reported after %d of %d events", n, limit+64*1024)
}
