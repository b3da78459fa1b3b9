package proc

import (
	"context"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/cgroup"
)

// Names of the report fields a kernel may be unable to give.
const (
	FieldPeakMemory = "peak_memory_bytes"
	FieldOOMKilled  = "oom_killed"
	FieldCPUUser    = "cpu_user_usec"
	FieldCPUSystem  = "cpu_system_usec"
)

// ExitReport says how and why a process ended. The optional numbers come
// from the process's own cgroup; what it could not give is named in
// Unavailable (and its Has flag is false).
type ExitReport struct {
	Pid        int
	Tag        string
	HasTag     bool
	ExitCode   int    // -1 when killed by a signal
	Signal     string // "SIGKILL"; empty when it exited
	CoreDumped bool
	OOMKilled  bool

	PeakMemory    uint64
	HasPeakMemory bool
	CPUUserUsec   uint64
	CPUSystemUsec uint64
	HasCPU        bool

	StartedAt, EndedAt time.Time

	StdoutBytes, StderrBytes, PTYBytes uint64
	DroppedBytes                       uint64
	Unavailable                        []string
}

// report builds the exit report once output is drained, before the
// command's cgroup goes.
func (p *Process) report(st syscall.WaitStatus, ended time.Time, u cgroup.Usage, measured bool) ExitReport {
	r := ExitReport{Pid: p.pid, Tag: p.tag, HasTag: p.hasTag, StartedAt: p.startedAt, EndedAt: ended, ExitCode: -1}
	switch {
	case st.Exited():
		r.ExitCode = st.ExitStatus()
	case st.Signaled():
		r.Signal = unix.SignalName(st.Signal())
		r.CoreDumped = st.CoreDump()
	}
	if measured && u.HasOOMKills {
		r.OOMKilled = u.OOMKills > 0
	} else {
		r.Unavailable = append(r.Unavailable, FieldOOMKilled)
	}
	if measured && u.HasPeakMemory {
		r.PeakMemory, r.HasPeakMemory = u.PeakMemory, true
	} else {
		r.Unavailable = append(r.Unavailable, FieldPeakMemory)
	}
	if measured && u.HasCPU {
		r.CPUUserUsec, r.CPUSystemUsec, r.HasCPU = u.CPUUserUsec, u.CPUSystemUsec, true
	} else {
		r.Unavailable = append(r.Unavailable, FieldCPUUser, FieldCPUSystem)
	}
	if p.log != nil {
		w, dropped := p.log.counts()
		r.StdoutBytes, r.StderrBytes, r.PTYBytes, r.DroppedBytes = w[Stdout], w[Stderr], w[PTY], dropped
	} else {
		r.StdoutBytes, r.StderrBytes, r.PTYBytes = p.written[Stdout].Load(), p.written[Stderr].Load(), p.written[PTY].Load()
	}
	return r
}

// Report is valid after Done is closed.
func (p *Process) Report() ExitReport {
	<-p.done
	return p.exitReport
}

// WaitReport returns the exit report of the selected process once it ended,
// or ctx's error.
func (m *Manager) WaitReport(ctx context.Context, sel Selector) (ExitReport, error) {
	p, err := m.GetRetained(sel)
	if err != nil {
		return ExitReport{}, err
	}
	select {
	case <-p.done:
		return p.exitReport, nil
	case <-ctx.Done():
		return ExitReport{}, errorf(ErrCanceled, "waiting for process %d: %v", p.pid, ctx.Err())
	}
}

// Reports lists the reports of the retained exited processes, oldest exit first.
func (m *Manager) Reports() []ExitReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked()
	out := make([]ExitReport, 0, len(m.retired))
	for _, p := range m.retired {
		out = append(out, p.exitReport)
	}
	return out
}

// LogBytes is the output kept in all logs, for tests and metrics.
func (m *Manager) LogBytes() int64 { return m.logBytes.Load() }

// Retained counts the processes in the table, live and exited.
func (m *Manager) Retained() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked()
	return len(m.procs)
}

// reportOfResult is the exit report of a retained exit carried without one
// (from E2B's envd, which keeps no reports): only the end event is known.
func reportOfResult(r Result) ExitReport {
	rep := ExitReport{ExitCode: r.ExitCode, Unavailable: []string{FieldOOMKilled, FieldPeakMemory, FieldCPUUser, FieldCPUSystem}}
	if !r.Exited {
		rep.ExitCode = -1
	}
	return rep
}
