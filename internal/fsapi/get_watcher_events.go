package fsapi

import (
	"context"
	"fmt"

	"github.com/envd-dev/envd/internal/gen/filesystem"
)

// GetWatcherEvents returns and clears the buffered events, oldest first.
// Events that arrived before a watcher failed are delivered first; once the
// buffer is empty every call returns the failure, until RemoveWatcher.
func (s *Service) GetWatcherEvents(_ context.Context, req *filesystem.GetWatcherEventsRequest) (*filesystem.GetWatcherEventsResponse, error) {
	s.mu.Lock()
	pw, ok := s.watchers[req.GetWatcherId()]
	s.mu.Unlock()
	if !ok {
		return nil, toConnect(fmt.Errorf("watcher with id %s not found: %w", req.GetWatcherId(), errUnknownWatcher))
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if len(pw.pending) == 0 && pw.err != nil {
		return nil, toConnect(fmt.Errorf("watcher %s: %w", req.GetWatcherId(), pw.err))
	}
	events := pw.pending
	pw.pending = nil
	return &filesystem.GetWatcherEventsResponse{Events: events}, nil
}
