package fsapi

import (
	"context"

	"github.com/envd-dev/envd/internal/gen/filesystem"
)

// MakeDir creates the directory and its missing parents, owned by the acting user.
func (s *Service) MakeDir(ctx context.Context, req *filesystem.MakeDirRequest) (*filesystem.MakeDirResponse, error) {
	p, u, err := s.resolve(ctx, req.GetPath(), true)
	if err != nil {
		return nil, toConnect(err)
	}
	e, err := s.describer().MakeDir(p, u.UID, u.GID)
	if err != nil {
		return nil, toConnect(err)
	}
	return &filesystem.MakeDirResponse{Entry: entryInfo(e)}, nil
}
