package processapi

import (
	"context"

	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/proc"
)

// Update resizes a process's pty; without a pty field it only checks the
// process exists.
func (s *Service) Update(ctx context.Context, req *pb.UpdateRequest) (*pb.UpdateResponse, error) {
	p, err := s.live(req.GetProcess())
	if err != nil {
		return nil, err
	}
	if req.Pty == nil {
		return &pb.UpdateResponse{}, nil
	}
	size := req.Pty.GetSize()
	if err := p.Resize(proc.Size{Cols: clamp16(size.GetCols()), Rows: clamp16(size.GetRows())}); err != nil {
		return nil, toConnect(err)
	}
	return &pb.UpdateResponse{}, nil
}
