package fsapi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/envd-dev/envd/internal/fswatch"
	"github.com/envd-dev/envd/internal/gen/filesystem"
)

// errBacklog fails a polling watcher whose client stopped polling.
var errBacklog = errors.New("watcher buffered too many events without being polled; events were lost")

// errUnknownWatcher is NotFound for an id that is not (or no longer) registered.
var errUnknownWatcher = errors.New("watcher not found")

// pollWatcher buffers events of one watch between GetWatcherEvents calls.
type pollWatcher struct {
	cancel context.CancelFunc
	spec   watcherSpec // what a live upgrade re-arms (handover.go)

	mu      sync.Mutex
	pending []*filesystem.FilesystemEvent
	err     error // set once the watch ends with an error; sticky
}

// CreateWatcher starts a watch that outlives the request; its events are
// fetched with GetWatcherEvents and it ends with RemoveWatcher or Close.
func (s *Service) CreateWatcher(ctx context.Context, req *filesystem.CreateWatcherRequest) (*filesystem.CreateWatcherResponse, error) {
	root, err := s.resolveWatchRoot(ctx, req.GetPath())
	if err != nil {
		return nil, toConnect(err)
	}
	wctx, cancel := context.WithCancel(s.ctx)
	w, err := fswatch.Start(wctx, root, fswatch.Options{
		Pool:               &s.inotify,
		Recursive:          req.GetRecursive(),
		AllowNetworkMounts: req.GetAllowNetworkMounts(),
		Staged:             s.staged,
	})
	if err != nil {
		cancel()
		return nil, toConnect(err)
	}
	pw := &pollWatcher{cancel: cancel, spec: watcherSpec{root, req.GetRecursive(), req.GetIncludeEntry()}}
	id := watcherID()

	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		cancel()
		return nil, toConnect(fmt.Errorf("create watcher: %w", s.ctx.Err()))
	}
	s.watchers[id] = pw
	s.wg.Add(1)
	s.mu.Unlock()

	conv := eventConverter{root: root, includeEntry: req.GetIncludeEntry(), describer: s.describer()}
	go func() {
		defer s.wg.Done()
		if err := pw.collect(w, conv, s.MaxPending); err != nil {
			s.log.Warn("polling watcher failed", "id", id, "path", root, "err", err)
		}
	}()
	return &filesystem.CreateWatcherResponse{WatcherId: id}, nil
}

// collect buffers events until the watch ends and returns why it failed,
// if it did; the failure is also kept for GetWatcherEvents.
func (pw *pollWatcher) collect(w *fswatch.Watcher, conv eventConverter, max int) error {
	defer pw.cancel()
	for ev := range w.Events() {
		pw.mu.Lock()
		if len(pw.pending) >= max {
			pw.err = fmt.Errorf("%w (%d events)", errBacklog, max)
			pw.mu.Unlock()
			return pw.err
		}
		pw.pending = append(pw.pending, conv.convert(ev))
		pw.mu.Unlock()
	}
	err := w.Err()
	if err != nil {
		pw.mu.Lock()
		pw.err = err
		pw.mu.Unlock()
	}
	return err
}

// watcherID is "w" plus 20 random characters from [a-z0-9] (§9.2).
func watcherID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 1, 21)
	out[0] = 'w'
	var buf [32]byte
	for len(out) < 21 {
		_, _ = rand.Read(buf[:]) // never fails on Linux (getrandom)
		for _, b := range buf {
			// 252 = 7*36: rejecting the rest keeps every character equally likely.
			if b < 252 && len(out) < 21 {
				out = append(out, alphabet[b%36])
			}
		}
	}
	return string(out)
}
