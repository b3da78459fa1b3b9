package fsapi

import (
	"context"

	"github.com/envd-dev/envd/internal/fsops"
	"github.com/envd-dev/envd/internal/gen/filesystem"
)

// ListDir lists to the requested depth (0 means 1) in filepath.WalkDir order.
func (s *Service) ListDir(ctx context.Context, req *filesystem.ListDirRequest) (*filesystem.ListDirResponse, error) {
	p, _, err := s.resolve(ctx, req.GetPath(), true)
	if err != nil {
		return nil, toConnect(err)
	}
	// uint32 → int: depth beyond any real tree just means "everything".
	depth := int(min(req.GetDepth(), 1<<20))
	entries, err := fsops.List(s.describer(), p, depth)
	if err != nil {
		return nil, toConnect(err)
	}
	out := &filesystem.ListDirResponse{Entries: make([]*filesystem.EntryInfo, 0, len(entries))}
	for _, e := range entries {
		out.Entries = append(out.Entries, entryInfo(e))
	}
	return out, nil
}
