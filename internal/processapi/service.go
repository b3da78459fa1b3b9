// Package processapi serves the process.Process Connect service on top of
// proc. Each RPC lives in its own file; errors.go is the one place where
// domain errors become Connect codes.
package processapi

import (
	"log/slog"
	"math"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/execenv"
	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
	"github.com/envd-dev/envd/internal/proc"
)

// Service implements processconnect.ProcessHandler.
type Service struct {
	procs *proc.Manager
	env   *execenv.Env
	log   *slog.Logger
}

var _ processconnect.ProcessHandler = (*Service)(nil)

// New serves the processes of procs; env supplies the default user.
func New(procs *proc.Manager, env *execenv.Env, log *slog.Logger) *Service {
	return &Service{procs: procs, env: env, log: log}
}

// HandlerOptions are the options the service must be mounted with.
// Responses are never compressed: process output is mostly produced and read
// on the same host or VM link, where gzip costs far more CPU and latency than
// the bytes it saves (it cut stdout throughput tenfold). Compressed requests
// are still accepted.
func HandlerOptions() []connect.HandlerOption {
	return []connect.HandlerOption{connect.WithCompressMinBytes(math.MaxInt32)}
}

// selector converts the wire selector; an unset oneof is the client's error.
func selector(sel *pb.ProcessSelector) (proc.Selector, error) {
	switch s := sel.GetSelector().(type) {
	case *pb.ProcessSelector_Pid:
		return proc.Selector{Pid: int(s.Pid)}, nil
	case *pb.ProcessSelector_Tag:
		return proc.Selector{Tag: s.Tag, ByTag: true}, nil
	default:
		return proc.Selector{}, invalid("process selector is required: set pid or tag")
	}
}

// live finds a running process for the unary RPCs.
func (s *Service) live(sel *pb.ProcessSelector) (*proc.Process, error) {
	ps, err := selector(sel)
	if err != nil {
		return nil, err
	}
	p, err := s.procs.Get(ps)
	if err != nil {
		return nil, toConnect(err)
	}
	return p, nil
}
