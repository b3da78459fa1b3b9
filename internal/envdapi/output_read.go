package envdapi

import (
	"context"
	"time"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
	"github.com/envd-dev/envd/internal/keepalive"
	"github.com/envd-dev/envd/internal/proc"
)

// readBatch is the most one look at the log takes before sending it.
const readBatch = 256 << 10

// Read streams one output stream of a process from an offset: a Gap first
// when that range was evicted (exactly what is gone), then chunks with their
// offsets; with follow it waits for more until the process ends. Whenever
// it reaches the end of a process that has ended it sends the exit report.
func (s *Output) Read(ctx context.Context, req *pb.ReadRequest, stream *connect.ServerStream[pb.ReadResponse]) error {
	sel, err := selector(req.GetProcess())
	if err != nil {
		return err
	}
	var which proc.Stream
	switch req.GetStream() {
	case pb.OutputStream_OUTPUT_STREAM_STDOUT:
		which = proc.Stdout
	case pb.OutputStream_OUTPUT_STREAM_STDERR:
		which = proc.Stderr
	case pb.OutputStream_OUTPUT_STREAM_PTY:
		which = proc.PTY
	default:
		return invalid("stream is required: stdout, stderr or pty")
	}
	p, err := s.procs.GetRetained(sel)
	if err != nil {
		return toConnect(err)
	}
	ka := keepalive.Interval(stream.Conn().RequestHeader())
	timer := time.NewTimer(ka)
	defer timer.Stop()
	offset := req.GetOffset()
	sent := false
	for {
		done := closed(p.Done()) // seen before the read, so that read saw all output
		r, err := p.ReadOutput(which, offset, readBatch)
		if err != nil {
			return toConnect(err)
		}
		next, err := send(stream, offset, &r)
		r.Release() // the messages were encoded: their bytes are no longer needed
		if err != nil {
			return err
		}
		offset = next
		if len(r.Data) > 0 || r.Dropped > 0 {
			sent = true
			timer.Reset(ka)
			continue
		}
		if done {
			return stream.Send(&pb.ReadResponse{Event: &pb.ReadResponse_Exit{Exit: exitReport(p.Report())}})
		}
		if !req.GetFollow() {
			return nil
		}
		if !sent {
			// Response headers go out with the first message: without one
			// a client would wait for them until output came.
			if err := stream.Send(&pb.ReadResponse{Event: &pb.ReadResponse_Keepalive{Keepalive: &pb.KeepAlive{}}}); err != nil {
				return err
			}
			sent = true
		}
		select {
		case <-r.Changed:
		case <-p.Done():
		case <-timer.C:
			if err := stream.Send(&pb.ReadResponse{Event: &pb.ReadResponse_Keepalive{Keepalive: &pb.KeepAlive{}}}); err != nil {
				return err
			}
			timer.Reset(ka)
		case <-ctx.Done():
			return ended(ctx, "read output")
		}
	}
}

// send streams one look at the log: the gap, if any, then its chunks. It
// returns the offset after them.
func send(stream *connect.ServerStream[pb.ReadResponse], offset uint64, r *proc.LogRead) (uint64, error) {
	if r.Dropped > 0 {
		if err := stream.Send(&pb.ReadResponse{Event: &pb.ReadResponse_Gap{Gap: &pb.Gap{Offset: offset, Dropped: r.Dropped}}}); err != nil {
			return offset, err
		}
		offset = r.Offset
	}
	for _, d := range r.Data {
		if err := stream.Send(&pb.ReadResponse{Event: &pb.ReadResponse_Chunk{Chunk: &pb.Chunk{Offset: offset, Data: d}}}); err != nil {
			return offset, err
		}
		offset += uint64(len(d))
	}
	return offset, nil
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
