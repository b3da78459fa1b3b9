package processapi

import (
	"context"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/keepalive"
)

// Connect attaches to a running process, or to one that exited within the
// retention period (then it gets start and the retained end). Its deadline
// bounds only the stream, never the process.
func (s *Service) Connect(ctx context.Context, req *pb.ConnectRequest, stream *connect.ServerStream[pb.ConnectResponse]) error {
	sel, err := selector(req.GetProcess())
	if err != nil {
		return err
	}
	p, err := s.procs.GetRetained(sel)
	if err != nil {
		return toConnect(err)
	}
	sub := p.Subscribe(ctx)
	defer sub.Close()
	return follow(ctx, p, sub, keepalive.Interval(stream.Conn().RequestHeader()), func(ev *pb.ProcessEvent) error {
		return stream.Send(&pb.ConnectResponse{Event: ev})
	}, rawWriter(ctx))
}
