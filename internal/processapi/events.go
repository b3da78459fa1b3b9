package processapi

import (
	"context"
	"time"

	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/proc"
)

// follow streams a process to one client: start, then output and keepalives,
// then end once the process was reaped and every chunk sent. It returns when
// the process ended, the client went away, or ctx's deadline passed.
// With raw set, data events bypass send (rawdata.go).
func follow(ctx context.Context, p *proc.Process, sub *proc.Subscription, keepalive time.Duration, send func(*pb.ProcessEvent) error, raw *rawOutput) error {
	sendData := func(c proc.Chunk) error { return send(dataEvent(c)) }
	if raw != nil {
		sendData = raw.send
	}
	if err := send(&pb.ProcessEvent{Event: &pb.ProcessEvent_Start{Start: &pb.ProcessEvent_StartEvent{Pid: uint32(p.Pid())}}}); err != nil {
		return err
	}
	timer := time.NewTimer(keepalive)
	defer timer.Stop()
	for {
		select {
		case c := <-sub.C:
			err := sendData(c)
			c.Release() // the message was written: its bytes are no longer needed
			if err != nil {
				return err
			}
			timer.Reset(keepalive)
		case <-p.Done():
			// Output is complete before Done closes: what is queued is the rest.
			for {
				select {
				case c := <-sub.C:
					err := sendData(c)
					c.Release()
					if err != nil {
						return err
					}
					continue
				default:
				}
				break
			}
			return send(endEvent(p.Result()))
		case <-timer.C:
			if err := send(&pb.ProcessEvent{Event: &pb.ProcessEvent_Keepalive{Keepalive: &pb.ProcessEvent_KeepAlive{}}}); err != nil {
				return err
			}
			timer.Reset(keepalive)
		case <-ctx.Done():
			return streamEnded(ctx)
		}
	}
}

func dataEvent(c proc.Chunk) *pb.ProcessEvent {
	d := &pb.ProcessEvent_DataEvent{}
	switch c.Stream {
	case proc.Stdout:
		d.Output = &pb.ProcessEvent_DataEvent_Stdout{Stdout: c.Data}
	case proc.Stderr:
		d.Output = &pb.ProcessEvent_DataEvent_Stderr{Stderr: c.Data}
	case proc.PTY:
		d.Output = &pb.ProcessEvent_DataEvent_Pty{Pty: c.Data}
	}
	return &pb.ProcessEvent{Event: &pb.ProcessEvent_Data{Data: d}}
}

func endEvent(r proc.Result) *pb.ProcessEvent {
	e := &pb.ProcessEvent_EndEvent{ExitCode: int32(r.ExitCode), Exited: r.Exited, Status: r.Status}
	if r.Err != "" {
		e.Error = &r.Err
	}
	return &pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: e}}
}
