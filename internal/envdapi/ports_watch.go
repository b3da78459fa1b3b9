package envdapi

import (
	"context"
	"time"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
	"github.com/envd-dev/envd/internal/keepalive"
	"github.com/envd-dev/envd/internal/portwatch"
)

// Watch streams the listening ports: the current set as opens, then every
// open and close, with keepalives on the Keepalive-Ping-Interval period.
func (s *Ports) Watch(ctx context.Context, _ *pb.WatchPortsRequest, stream *connect.ServerStream[pb.PortEvent]) error {
	snap, sub, err := s.ports.Subscribe()
	if err != nil {
		return toConnect(err)
	}
	defer sub.Close()
	for _, e := range snap {
		if err := stream.Send(portEvent(e)); err != nil {
			return err
		}
	}
	if len(snap) == 0 {
		// Response headers go out with the first message: without one a
		// client would wait for them until a port opened.
		if err := stream.Send(&pb.PortEvent{Keepalive: true}); err != nil {
			return err
		}
	}
	ka := keepalive.Interval(stream.Conn().RequestHeader())
	timer := time.NewTimer(ka)
	defer timer.Stop()
	for {
		select {
		case e := <-sub.C:
			if err := stream.Send(portEvent(e)); err != nil {
				return err
			}
			timer.Reset(ka)
		case <-sub.Done():
			return toConnect(sub.Err())
		case <-timer.C:
			if err := stream.Send(&pb.PortEvent{Keepalive: true}); err != nil {
				return err
			}
			timer.Reset(ka)
		case <-ctx.Done():
			return ended(ctx, "watch ports")
		}
	}
}

func portEvent(e portwatch.Event) *pb.PortEvent {
	out := &pb.PortEvent{
		State:     pb.PortEvent_STATE_OPEN,
		Port:      uint32(e.Port),
		Address:   e.Addr.String(),
		Family:    4,
		Pid:       uint32(e.Pid),
		Cmdline:   e.Cmdline,
		Forwarded: e.Forwarded,
	}
	if e.State == portwatch.Closed {
		out.State = pb.PortEvent_STATE_CLOSED
	}
	if e.V6 {
		out.Family = 6
	}
	return out
}
