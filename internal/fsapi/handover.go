package fsapi

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/envd-dev/envd/internal/fswatch"
	"github.com/envd-dev/envd/internal/gen/filesystem"
)

// watcherSpec is how a polling watcher was created.
type watcherSpec struct {
	root         string // resolved
	recursive    bool
	includeEntry bool
}

// WatcherState is a polling watcher as it crosses a live upgrade (§18.1):
// its id, what it watches, and the events buffered and not yet fetched.
// Its error state and allow_network_mounts are not carried.
type WatcherState struct {
	ID           string
	Path         string
	Recursive    bool
	IncludeEntry bool
	Pending      []*filesystem.FilesystemEvent
}

// FreezeWatchers describes every polling watcher and keeps
// Create/Get/RemoveWatcher waiting until release, so no event is fetched
// from the old image after it was written into the handover.
func (s *Service) FreezeWatchers() (states []WatcherState, release func()) {
	s.mu.Lock()
	for id, pw := range s.watchers {
		pw.mu.Lock()
		states = append(states, WatcherState{
			ID:           id,
			Path:         pw.spec.root,
			Recursive:    pw.spec.recursive,
			IncludeEntry: pw.spec.includeEntry,
			Pending:      slices.Clone(pw.pending),
		})
		pw.mu.Unlock()
	}
	slices.SortFunc(states, func(a, b WatcherState) int { return cmp.Compare(a.ID, b.ID) })
	return states, s.mu.Unlock
}

// RestoreWatcher re-arms a polling watcher under its original id with a
// fresh inotify watch; the carried events come before any new one. The
// network-filesystem check was passed when it was created and is not
// repeated.
func (s *Service) RestoreWatcher(st WatcherState) error {
	wctx, cancel := context.WithCancel(s.ctx)
	w, err := fswatch.Start(wctx, st.Path, fswatch.Options{Recursive: st.Recursive, AllowNetworkMounts: true})
	if err != nil {
		cancel()
		return fmt.Errorf("re-arm watcher %s on %s: %w", st.ID, st.Path, err)
	}
	pw := &pollWatcher{
		cancel:  cancel,
		spec:    watcherSpec{st.Path, st.Recursive, st.IncludeEntry},
		pending: slices.Clone(st.Pending),
	}
	s.mu.Lock()
	if _, dup := s.watchers[st.ID]; dup || s.ctx.Err() != nil {
		s.mu.Unlock()
		cancel()
		return fmt.Errorf("re-arm watcher %s: id taken or service closed", st.ID)
	}
	s.watchers[st.ID] = pw
	s.wg.Add(1)
	s.mu.Unlock()

	conv := eventConverter{root: st.Path, includeEntry: st.IncludeEntry, describer: s.describer()}
	go func() {
		defer s.wg.Done()
		if err := pw.collect(w, conv, s.MaxPending); err != nil {
			s.log.Warn("polling watcher failed", "id", st.ID, "path", st.Path, "err", err)
		}
	}()
	return nil
}
