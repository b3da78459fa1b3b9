// Package envdapi serves the envd.v1 Connect services, what no earlier envd
// offered: Output (the log of every process's output, from any offset),
// Exits (why a process ended) and Ports (listeners opening and closing).
// One Connect service per capability, one file per RPC; errors.go is the one
// place where domain errors become Connect codes. The domain work is in
// internal/proc and internal/portwatch.
package envdapi

import (
	"math"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
	"github.com/envd-dev/envd/internal/gen/envd/v1/envdv1connect"
	"github.com/envd-dev/envd/internal/portwatch"
	"github.com/envd-dev/envd/internal/proc"
)

// Output implements envdv1connect.OutputHandler.
type Output struct{ procs *proc.Manager }

// Exits implements envdv1connect.ExitsHandler.
type Exits struct{ procs *proc.Manager }

// Ports implements envdv1connect.PortsHandler.
type Ports struct{ ports *portwatch.Watcher }

var (
	_ envdv1connect.OutputHandler = (*Output)(nil)
	_ envdv1connect.ExitsHandler  = (*Exits)(nil)
	_ envdv1connect.PortsHandler  = (*Ports)(nil)
)

// NewOutput serves the output logs of procs.
func NewOutput(procs *proc.Manager) *Output { return &Output{procs: procs} }

// NewExits serves the exit reports of procs.
func NewExits(procs *proc.Manager) *Exits { return &Exits{procs: procs} }

// NewPorts serves the port events of w.
func NewPorts(w *portwatch.Watcher) *Ports { return &Ports{ports: w} }

// HandlerOptions are the options every envd.v1 service is mounted with:
// uncompressed responses, as the process service, since output is produced
// and read on the same host or VM link.
func HandlerOptions() []connect.HandlerOption {
	return []connect.HandlerOption{connect.WithCompressMinBytes(math.MaxInt32)}
}

// selector converts the wire reference; an unset oneof is the client's error.
func selector(ref *pb.ProcessRef) (proc.Selector, error) {
	switch s := ref.GetSelector().(type) {
	case *pb.ProcessRef_Pid:
		return proc.Selector{Pid: int(s.Pid)}, nil
	case *pb.ProcessRef_Tag:
		return proc.Selector{Tag: s.Tag, ByTag: true}, nil
	default:
		return proc.Selector{}, invalid("process is required: set pid or tag")
	}
}

// exitReport is the wire form of a report.
func exitReport(r proc.ExitReport) *pb.ExitReport {
	out := &pb.ExitReport{
		Pid:             uint32(r.Pid),
		Tag:             r.Tag,
		HasTag:          r.HasTag,
		ExitCode:        int32(r.ExitCode),
		Signal:          r.Signal,
		CoreDumped:      r.CoreDumped,
		OomKilled:       r.OOMKilled,
		StartedAtUnixMs: r.StartedAt.UnixMilli(),
		EndedAtUnixMs:   r.EndedAt.UnixMilli(),
		WallUsec:        uint64(max(r.EndedAt.Sub(r.StartedAt).Microseconds(), 0)),
		StdoutBytes:     r.StdoutBytes,
		StderrBytes:     r.StderrBytes,
		PtyBytes:        r.PTYBytes,
		DroppedBytes:    r.DroppedBytes,
		Unavailable:     r.Unavailable,
	}
	if r.HasPeakMemory {
		out.PeakMemoryBytes = &r.PeakMemory
	}
	if r.HasCPU {
		out.CpuUserUsec, out.CpuSystemUsec = &r.CPUUserUsec, &r.CPUSystemUsec
	}
	return out
}
