package proc

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"
)

// Exported is a running process as it crosses a live upgrade (§18.1): what
// the next image of envd needs to take it over. The files stay owned by the
// process; the upgrade duplicates them without closing or touching their
// blocking mode.
type Exported struct {
	Pid    int
	Tag    string
	HasTag bool
	Config Config
	PTY    bool
	// Stdout and Stderr are the read ends of the output pipes, Stdin the
	// write end of the stdin pipe, TTY the pty master; nil when absent.
	Stdout, Stderr, Stdin, TTY *os.File
	Deadline                   time.Time // zero: no lifetime limit
	StartedAt                  time.Time
	// Log is the output log up to the snapshot (nil: no log kept): the
	// readers stop before it is taken, so every later byte is still in the
	// carried descriptors.
	Log *LogState
}

// ExportedExit is a retained exit (§8.2) as it crosses a live upgrade.
type ExportedExit struct {
	Pid       int
	Tag       string
	HasTag    bool
	Result    Result
	Remaining time.Duration // retention left
	// Report is the exit report, when HasReport (an E2B blob has none).
	Report    ExitReport
	HasReport bool
	Log       *LogState // nil: none kept
	PTY       bool      // which streams Log has
}

// readersStopWait bounds how long Freeze waits for the output readers to
// stop. Only a reader handing a chunk to a slow subscriber takes longer,
// and that chunk is in the log already.
const readersStopWait = time.Second

// Freeze stops the table for a handover and describes it: until release,
// no process is registered, reaped or retired, stdin writes wait, and no
// output is read, so the exported logs end exactly where the carried
// descriptors begin. Processes that were already reaped but are still
// draining their output are neither live nor retained yet; they are left
// out and counted in dying.
func (m *Manager) Freeze() (live []Exported, exits []ExportedExit, dying int, release func()) {
	hold := m.reaper.Hold()
	m.mu.Lock()
	m.pruneLocked()
	now := m.now()
	stdinDeadline := time.Now().Add(time.Second) // for all processes together
	var locked, liveProcs []*Process
	procs := make([]*Process, 0, len(m.procs))
	for _, p := range m.procs {
		procs = append(procs, p)
	}
	slices.SortFunc(procs, func(a, b *Process) int { return int(a.seq - b.seq) })
	for _, p := range procs {
		if !p.exitedAt.IsZero() {
			e := ExportedExit{
				Pid: p.pid, Tag: p.tag, HasTag: p.hasTag, Result: p.result,
				Remaining: m.retention - now.Sub(p.exitedAt),
				Report:    p.exitReport, HasReport: true, PTY: p.isPTY,
			}
			if p.log != nil {
				e.Log = p.log.export()
			}
			exits = append(exits, e)
			continue
		}
		if !hold.Waiting(p.pid) {
			dying++
			continue
		}
		e := Exported{Pid: p.pid, Tag: p.tag, HasTag: p.hasTag, Config: p.config, PTY: p.isPTY, Deadline: p.deadline, StartedAt: p.startedAt}
		if p.isPTY {
			e.TTY = p.outputs[0]
		} else {
			e.Stdout, e.Stderr = p.outputs[0], p.outputs[1]
		}
		// A stdin write blocked on a full pipe holds inMu until its caller
		// gives up; the handover does not wait for it and carries no stdin.
		if lockBy(p, stdinDeadline) {
			locked = append(locked, p)
			if !p.isPTY {
				e.Stdin = p.stdin
			}
		}
		live = append(live, e)
		liveProcs = append(liveProcs, p)
	}
	paused := m.pauseReaders(liveProcs)
	for i, p := range liveProcs {
		if p.log != nil {
			live[i].Log = p.log.export()
		}
	}
	return live, exits, dying, func() {
		// Before the reaper goes on: no finish may wait for the readers
		// while they are restarted.
		for _, pr := range paused {
			pr.resume()
		}
		for _, p := range locked {
			p.inMu.Unlock()
		}
		m.mu.Unlock()
		hold.Release()
	}
}

// pausedReaders are a process's output readers stopped for a handover.
type pausedReaders struct {
	p       *Process
	stopped chan struct{} // closed once every reader returned
}

// pausable says whether every output of p takes a read deadline (the
// zero one changes nothing). Ours all do; one that does not is left
// running, and what it reads after the snapshot is lost.
func pausable(p *Process) error {
	for _, f := range p.outputs {
		if f != nil {
			if err := f.SetReadDeadline(time.Time{}); err != nil {
				return err
			}
		}
	}
	return nil
}

// pauseReaders stops the output readers of ps: a read deadline in the past
// wakes each from its wait, a read in progress finishes and its chunk is
// logged first, and no later read takes a byte from the descriptor. The
// workload is frozen, so what remains in the pipes stays there for the
// next image.
func (m *Manager) pauseReaders(ps []*Process) []*pausedReaders {
	past := time.Unix(1, 0)
	out := make([]*pausedReaders, 0, len(ps))
	for _, p := range ps {
		if err := pausable(p); err != nil {
			m.log.Warn("handover: output reader cannot be stopped; output it reads from now on is lost", "pid", p.pid, "err", err)
			continue
		}
		for _, f := range p.outputs {
			if f != nil {
				_ = f.SetReadDeadline(past) // cannot fail: pausable
			}
		}
		pr := &pausedReaders{p: p, stopped: make(chan struct{})}
		go func() { p.readers.Wait(); close(pr.stopped) }()
		out = append(out, pr)
	}
	timeout := time.NewTimer(readersStopWait)
	defer timeout.Stop()
	for _, pr := range out {
		select {
		case <-pr.stopped:
		case <-timeout.C:
			m.log.Warn("handover: an output reader is still delivering to a slow client; its chunk is logged", "pid", pr.p.pid)
			timeout.Reset(0)
		}
	}
	return out
}

// resume restarts the readers after an aborted handover. A reader still
// delivering to a slow client is waited for: it returns at its next read,
// which the deadline fails before it takes anything.
func (pr *pausedReaders) resume() {
	<-pr.stopped
	p := pr.p
	for i, f := range p.outputs {
		if f == nil {
			continue
		}
		_ = f.SetReadDeadline(time.Time{})
		stream := Stream(i)
		if p.isPTY {
			stream = PTY
		}
		p.readers.Add(1)
		go p.pump(f, stream)
	}
}

func lockBy(p *Process, deadline time.Time) bool {
	for !p.inMu.TryLock() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// Adoption is a process the previous image of envd started, taken over
// after a same-PID execve. The files are the carried descriptors, now owned
// by the Manager.
type Adoption struct {
	Pid    int
	Tag    string
	HasTag bool
	Config Config
	// TTY set: a pty process, whose master is also its input and output.
	// Otherwise Stdout and Stderr are the output pipes and Stdin, if set,
	// the stdin pipe.
	Stdout, Stderr, Stdin, TTY *os.File
	StartedAt                  time.Time // zero: unknown
	// Log continues the output log of the previous image (nil: it starts
	// empty at the swap).
	Log *LogState
}

// ErrNotChild means an adopted pid is not (or no longer) a child of envd.
var ErrNotChild = errors.New("not a child of envd")

// Adopt takes over a running child: it is registered with the reaper and in
// the table, its output is pumped to subscribers from now on and it ends
// with the §8.1 end event of its real wait status, like any started
// process. A lifetime limit is the caller's to arm (it starts at the thaw).
// On error the files are closed.
func (m *Manager) Adopt(a Adoption) (*Process, error) {
	files := []*os.File{a.Stdout, a.Stderr, a.Stdin, a.TTY}
	closeAll := func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}
	if a.Pid <= 0 {
		closeAll()
		return nil, fmt.Errorf("adopt: invalid pid %d", a.Pid)
	}
	p := &Process{
		m:      m,
		pid:    a.Pid,
		tag:    a.Tag,
		hasTag: a.HasTag,
		config: a.Config,
		isPTY:  a.TTY != nil,
		done:   make(chan struct{}),

		startedAt: a.StartedAt,
	}
	if m.logLimit > 0 {
		p.log = newOutputLog(m.logLimit, &m.logBytes, m.logTotal)
		if a.Log != nil {
			l, err := importOutputLog(a.Log, m.logLimit, &m.logBytes, m.logTotal)
			if err != nil {
				m.log.Warn("adopt: output log not carried; it starts at the swap", "pid", a.Pid, "err", err)
			} else {
				p.log = l
			}
		}
	}
	var streams []Stream
	if p.isPTY {
		p.tty, p.stdin, p.outputs = a.TTY, a.TTY, []*os.File{a.TTY}
		streams = []Stream{PTY}
		for _, f := range []*os.File{a.Stdout, a.Stderr, a.Stdin} {
			if f != nil {
				f.Close()
			}
		}
	} else {
		// Indexed by stream, absent ones nil, as Freeze reads them.
		p.stdin, p.outputs = a.Stdin, []*os.File{a.Stdout, a.Stderr}
		streams = []Stream{Stdout, Stderr}
	}
	exit, err := m.reaper.Adopt(a.Pid)
	if err != nil {
		closeAll()
		if p.log != nil {
			p.log.free()
		}
		if errors.Is(err, syscall.ECHILD) {
			return nil, fmt.Errorf("%w: %w", ErrNotChild, err)
		}
		return nil, err
	}
	p.exit = exit
	m.register(p)
	for i, f := range p.outputs {
		if f != nil {
			p.readers.Add(1)
			go p.pump(f, streams[i])
		}
	}
	go p.finish()
	return p, nil
}

// ErrLive refuses a retained exit whose pid belongs to a running process.
var ErrLive = errors.New("pid belongs to a running process")

// AdoptExit restores a retained exit carried across a live upgrade: Connect
// finds it, with its end event, for the retention time it had left.
func (m *Manager) AdoptExit(e ExportedExit) error {
	if e.Remaining <= 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if q := m.procs[e.Pid]; q != nil && q.exitedAt.IsZero() {
		return fmt.Errorf("restore exit of pid %d: %w", e.Pid, ErrLive)
	}
	p := &Process{
		m:      m,
		pid:    e.Pid,
		tag:    e.Tag,
		hasTag: e.HasTag,
		done:   make(chan struct{}),
		result: e.Result,
		isPTY:  e.PTY,
	}
	p.exitReport = e.Report
	if !e.HasReport {
		p.exitReport = reportOfResult(e.Result)
	}
	p.exitReport.Pid, p.exitReport.Tag, p.exitReport.HasTag = e.Pid, e.Tag, e.HasTag
	if e.Log != nil && m.logLimit > 0 {
		l, err := importOutputLog(e.Log, m.logLimit, &m.logBytes, m.logTotal)
		if err != nil {
			return fmt.Errorf("restore exit of pid %d: %w", e.Pid, err)
		}
		p.log = l
	}
	close(p.done)
	m.seq++
	p.seq = m.seq
	p.exitedAt = m.now().Add(-(m.retention - min(e.Remaining, m.retention)))
	m.procs[p.pid] = p
	// retired stays ordered by exit time, as pruneLocked expects.
	i, _ := slices.BinarySearchFunc(m.retired, p.exitedAt, func(q *Process, t time.Time) int { return q.exitedAt.Compare(t) })
	m.retired = slices.Insert(m.retired, i, p)
	return nil
}
