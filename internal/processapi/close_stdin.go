package processapi

import (
	"context"

	pb "github.com/envd-dev/envd/internal/gen/process"
)

// CloseStdin gives the process EOF on stdin; a pty has no separate stdin.
func (s *Service) CloseStdin(ctx context.Context, req *pb.CloseStdinRequest) (*pb.CloseStdinResponse, error) {
	p, err := s.live(req.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.CloseStdin(); err != nil {
		return nil, toConnect(err)
	}
	return &pb.CloseStdinResponse{}, nil
}
