package processapi

import (
	"context"
	"syscall"

	pb "github.com/envd-dev/envd/internal/gen/process"
)

// maxStandardSignal is the last of Linux's standard signals; the real-time
// ones above it carry application meanings envd has no business guessing.
const maxStandardSignal = 31

// SendSignal signals the process's whole group, so its children get it too.
//
// The wire enum names only SIGTERM and SIGKILL, and its values are the Linux
// signal numbers. envd also accepts the other standard signal numbers
// (SIGINT for a remote Ctrl-C, SIGHUP, SIGQUIT, SIGUSR1, …) as an additive
// extension: proto3 enums are open, so the number arrives intact, and no
// client written against the enum ever sends one, so none sees a change.
func (s *Service) SendSignal(ctx context.Context, req *pb.SendSignalRequest) (*pb.SendSignalResponse, error) {
	n := int32(req.GetSignal())
	if n < 1 || n > maxStandardSignal {
		return nil, invalid("invalid signal: %s", req.GetSignal())
	}
	p, err := s.live(req.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.Signal(syscall.Signal(n)); err != nil {
		return nil, toConnect(err)
	}
	return &pb.SendSignalResponse{}, nil
}
