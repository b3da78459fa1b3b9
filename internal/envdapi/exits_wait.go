package envdapi

import (
	"context"

	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
)

// Wait returns the exit report once the process ended, at once if it
// already has; the call's deadline bounds only the wait.
func (s *Exits) Wait(ctx context.Context, req *pb.WaitRequest) (*pb.ExitReport, error) {
	sel, err := selector(req.GetProcess())
	if err != nil {
		return nil, err
	}
	r, err := s.procs.WaitReport(ctx, sel)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ended(ctx, "wait for exit")
		}
		return nil, toConnect(err)
	}
	return exitReport(r), nil
}
