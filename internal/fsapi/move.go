package fsapi

import (
	"context"
	"fmt"

	"github.com/envd-dev/envd/internal/fsops"
	"github.com/envd-dev/envd/internal/gen/filesystem"
)

// Move renames source to destination, creating the destination's parents
// owned by the acting user. Empty paths are refused rather than read as the
// workdir.
func (s *Service) Move(ctx context.Context, req *filesystem.MoveRequest) (*filesystem.MoveResponse, error) {
	src, u, err := s.resolve(ctx, req.GetSource(), false)
	if err != nil {
		return nil, toConnect(fmt.Errorf("source: %w", err))
	}
	dst, _, err := s.resolve(ctx, req.GetDestination(), false)
	if err != nil {
		return nil, toConnect(fmt.Errorf("destination: %w", err))
	}
	if err := fsops.Move(src, dst, u.UID, u.GID); err != nil {
		return nil, toConnect(err)
	}
	e, err := s.describer().Describe(dst)
	if err != nil {
		return nil, toConnect(err)
	}
	return &filesystem.MoveResponse{Entry: entryInfo(e)}, nil
}
