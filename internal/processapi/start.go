package processapi

import (
	"context"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/auth"
	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/keepalive"
	"github.com/envd-dev/envd/internal/proc"
)

// Start runs a process and streams it. The request's Connect-Timeout-Ms is
// the process's lifetime (§8.1): when the deadline passes the process group
// is SIGKILLed and the stream ends with DeadlineExceeded. A client that merely
// disconnects leaves the process running.
func (s *Service) Start(ctx context.Context, req *pb.StartRequest, stream *connect.ServerStream[pb.StartResponse]) error {
	u, err := auth.UserFrom(ctx, s.env)
	if err != nil {
		return err
	}
	c := req.GetProcess()
	if c == nil {
		c = &pb.ProcessConfig{}
	}
	o := proc.StartOptions{
		Config:    proc.Config{Cmd: c.GetCmd(), Args: c.GetArgs(), Envs: c.GetEnvs(), Cwd: c.Cwd},
		User:      u,
		Stdin:     req.Stdin == nil || *req.Stdin,
		Subscribe: ctx,
	}
	if req.Tag != nil {
		o.Tag, o.HasTag = *req.Tag, true
	}
	if req.Pty != nil {
		size := req.Pty.GetSize()
		o.PTY = &proc.Size{Cols: clamp16(size.GetCols()), Rows: clamp16(size.GetRows())}
	}
	if dl, ok := ctx.Deadline(); ok {
		o.Deadline = dl
	}
	p, sub, err := s.procs.Start(o)
	if err != nil {
		return toConnect(err)
	}
	defer sub.Close()
	return follow(ctx, p, sub, keepalive.Interval(stream.Conn().RequestHeader()), func(ev *pb.ProcessEvent) error {
		return stream.Send(&pb.StartResponse{Event: ev})
	}, rawWriter(ctx))
}

func clamp16(v uint32) uint16 {
	return uint16(min(v, 0xffff))
}
