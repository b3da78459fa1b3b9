package fsapi

import (
	"context"
	"fmt"

	"github.com/envd-dev/envd/internal/gen/filesystem"
)

// Stat describes the path itself; a final symlink is not followed.
func (s *Service) Stat(ctx context.Context, req *filesystem.StatRequest) (*filesystem.StatResponse, error) {
	p, _, err := s.resolve(ctx, req.GetPath(), true)
	if err != nil {
		return nil, toConnect(err)
	}
	e, err := s.describer().Describe(p)
	if err != nil {
		return nil, toConnect(fmt.Errorf("stat: %w", err))
	}
	return &filesystem.StatResponse{Entry: entryInfo(e)}, nil
}
