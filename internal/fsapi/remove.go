package fsapi

import (
	"context"

	"github.com/envd-dev/envd/internal/fsops"
	"github.com/envd-dev/envd/internal/gen/filesystem"
)

// Remove deletes recursively; a missing path is success. An empty path is
// refused: both older envds read it as the workdir and deleted it.
func (s *Service) Remove(ctx context.Context, req *filesystem.RemoveRequest) (*filesystem.RemoveResponse, error) {
	p, _, err := s.resolve(ctx, req.GetPath(), false)
	if err != nil {
		return nil, toConnect(err)
	}
	if err := fsops.Remove(p); err != nil {
		return nil, toConnect(err)
	}
	return &filesystem.RemoveResponse{}, nil
}
