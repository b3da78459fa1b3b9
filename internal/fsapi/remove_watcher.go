package fsapi

import (
	"context"
	"fmt"

	"github.com/envd-dev/envd/internal/gen/filesystem"
)

// RemoveWatcher stops a polling watcher and forgets it.
func (s *Service) RemoveWatcher(_ context.Context, req *filesystem.RemoveWatcherRequest) (*filesystem.RemoveWatcherResponse, error) {
	s.mu.Lock()
	pw, ok := s.watchers[req.GetWatcherId()]
	delete(s.watchers, req.GetWatcherId())
	s.mu.Unlock()
	if !ok {
		return nil, toConnect(fmt.Errorf("watcher with id %s not found: %w", req.GetWatcherId(), errUnknownWatcher))
	}
	pw.cancel()
	return &filesystem.RemoveWatcherResponse{}, nil
}
