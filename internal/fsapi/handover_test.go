package fsapi_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/fsapi"
	"github.com/envd-dev/envd/internal/fsops"
	"github.com/envd-dev/envd/internal/gen/filesystem"
)

func newService(t *testing.T) *fsapi.Service {
	t.Helper()
	env := execenv.NewEnv(os.Getenv("PATH"))
	env.SetDefaultUser("root")
	log := slog.New(slog.DiscardHandler)
	s := fsapi.New(env, fsops.NewWriter(log), log)
	t.Cleanup(s.Close)
	return s
}

func pollUntil(t *testing.T, s *fsapi.Service, id, name string) []*filesystem.FilesystemEvent {
	t.Helper()
	var all []*filesystem.FilesystemEvent
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r, err := s.GetWatcherEvents(context.Background(), &filesystem.GetWatcherEventsRequest{WatcherId: id})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, r.GetEvents()...)
		for _, ev := range r.GetEvents() {
			if ev.GetName() == name {
				return all
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("watcher %s never saw %s (got %v)", id, name, all)
	return nil
}

// A polling watcher crosses a live upgrade: exported with its undrained
// events, re-armed in another service under the same id, carried events
// first.
func TestWatcherHandover(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the watchers run as the default user root")
	}
	dir := t.TempDir()
	old := newService(t)
	ctx := context.Background()
	w, err := old.CreateWatcher(ctx, &filesystem.CreateWatcherRequest{Path: dir, Recursive: true, IncludeEntry: true})
	if err != nil {
		t.Fatal(err)
	}
	probe, _ := old.CreateWatcher(ctx, &filesystem.CreateWatcherRequest{Path: dir})
	os.WriteFile(filepath.Join(dir, "before"), nil, 0o644)
	pollUntil(t, old, probe.GetWatcherId(), "before")

	var carried fsapi.WatcherState
	// The collector may not have buffered the event yet: export again until it has.
	for deadline := time.Now().Add(30 * time.Second); !hasEvent(carried.Pending, "before", filesystem.EventType_EVENT_TYPE_CREATE); {
		if time.Now().After(deadline) {
			t.Fatalf("export never carried the pending event: %+v", carried)
		}
		states, release := old.FreezeWatchers()
		release()
		for _, st := range states {
			if st.ID == w.GetWatcherId() {
				carried = st
			}
		}
	}
	if carried.Path != dir || !carried.Recursive || !carried.IncludeEntry {
		t.Fatalf("exported %+v", carried)
	}

	s := newService(t)
	if err := s.RestoreWatcher(carried); err != nil {
		t.Fatal(err)
	}
	if err := s.RestoreWatcher(carried); err == nil {
		t.Fatal("restored the same id twice")
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "after"), nil, 0o644) // recursive: a new subdirectory is watched too
	got := pollUntil(t, s, carried.ID, "sub/after")
	if got[0].GetName() != "before" || got[0].GetEntry() == nil {
		t.Fatalf("carried event not first, or without its entry: %v", got)
	}

	// A watcher whose directory is gone is dropped; its id is unknown.
	gone := carried
	gone.ID, gone.Path = "wgone", filepath.Join(dir, "missing")
	if err := s.RestoreWatcher(gone); err == nil {
		t.Fatal("re-armed a watcher on a missing directory")
	}
	if _, err := s.GetWatcherEvents(ctx, &filesystem.GetWatcherEventsRequest{WatcherId: "wgone"}); err == nil {
		t.Fatal("a dropped watcher answers")
	}
}
