package envdapi

import (
	"context"

	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
	"github.com/envd-dev/envd/internal/portwatch"
)

// WaitFor returns the open event of the port as soon as anything listens on
// it (at once if something does), or DeadlineExceeded at the call's
// Connect-Timeout-Ms.
func (s *Ports) WaitFor(ctx context.Context, req *pb.WaitForRequest) (*pb.PortEvent, error) {
	port := req.GetPort()
	if port == 0 || port > 65535 {
		return nil, invalid("port must be between 1 and 65535, got %d", port)
	}
	snap, sub, err := s.ports.Subscribe()
	if err != nil {
		return nil, toConnect(err)
	}
	defer sub.Close()
	for _, e := range snap {
		if uint32(e.Port) == port {
			return portEvent(e), nil
		}
	}
	for {
		select {
		case e := <-sub.C:
			if e.State == portwatch.Open && uint32(e.Port) == port {
				return portEvent(e), nil
			}
		case <-sub.Done():
			return nil, toConnect(sub.Err())
		case <-ctx.Done():
			return nil, ended(ctx, "wait for port")
		}
	}
}
