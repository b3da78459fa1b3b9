package processapi

import (
	"context"
	"syscall"

	pb "github.com/envd-dev/envd/internal/gen/process"
)

// SendSignal signals the process's whole group, so its children get it too.
func (s *Service) SendSignal(ctx context.Context, req *pb.SendSignalRequest) (*pb.SendSignalResponse, error) {
	var sig syscall.Signal
	switch req.GetSignal() {
	case pb.Signal_SIGNAL_SIGKILL:
		sig = syscall.SIGKILL
	case pb.Signal_SIGNAL_SIGTERM:
		sig = syscall.SIGTERM
	default:
		return nil, invalid("invalid signal: %s", req.GetSignal())
	}
	p, err := s.live(req.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.Signal(sig); err != nil {
		return nil, toConnect(err)
	}
	return &pb.SendSignalResponse{}, nil
}
