package processapi

import (
	"context"

	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/proc"
)

// SendInput writes one piece of input (an empty payload is fine).
func (s *Service) SendInput(ctx context.Context, req *pb.SendInputRequest) (*pb.SendInputResponse, error) {
	p, err := s.live(req.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := writeInput(ctx, p, req.GetInput()); err != nil {
		return nil, err
	}
	return &pb.SendInputResponse{}, nil
}

func writeInput(ctx context.Context, p *proc.Process, in *pb.ProcessInput) error {
	var err error
	switch v := in.GetInput().(type) {
	case *pb.ProcessInput_Stdin:
		err = p.WriteStdin(ctx, v.Stdin)
	case *pb.ProcessInput_Pty:
		err = p.WritePTY(ctx, v.Pty)
	default:
		return invalid("input is required: set stdin or pty")
	}
	if err != nil {
		return toConnect(err)
	}
	return nil
}
