package envdapi

import (
	"context"

	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
)

// List returns the reports of the processes that ended within the
// retention period, oldest exit first.
func (s *Exits) List(context.Context, *pb.ListExitsRequest) (*pb.ListExitsResponse, error) {
	rs := s.procs.Reports()
	out := &pb.ListExitsResponse{Exits: make([]*pb.ExitReport, len(rs))}
	for i, r := range rs {
		out.Exits[i] = exitReport(r)
	}
	return out, nil
}
