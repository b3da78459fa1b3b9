package processapi

import (
	"context"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/proc"
)

// StreamInput writes each data message in order to the process chosen by the
// start message, which must come first.
func (s *Service) StreamInput(ctx context.Context, stream *connect.ClientStream[pb.StreamInputRequest]) (*pb.StreamInputResponse, error) {
	var p *proc.Process
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *pb.StreamInputRequest_Start:
			var err error
			if p, err = s.live(ev.Start.GetProcess()); err != nil {
				return nil, err
			}
		case *pb.StreamInputRequest_Data:
			if p == nil {
				return nil, invalid("input stream must begin with a start event selecting the process")
			}
			if err := writeInput(ctx, p, ev.Data.GetInput()); err != nil {
				return nil, err
			}
		case *pb.StreamInputRequest_Keepalive:
		default:
			return nil, invalid("input stream event is required: start, data or keepalive")
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return &pb.StreamInputResponse{}, nil
}
