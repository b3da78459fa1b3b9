package upgrade

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	epb "github.com/envd-dev/envd/internal/gen/envd/v1"
	pb "github.com/envd-dev/envd/internal/gen/process"
	upb "github.com/envd-dev/envd/internal/gen/upgrade"
	"github.com/envd-dev/envd/internal/proc"
)

// MaxSchema is the newest blob schema this envd reads.
const MaxSchema = 2

// ErrSchema refuses a blob written by a newer envd.
var ErrSchema = errors.New("handover schema newer than supported")

// State is the handover blob's content.
type State struct {
	Schema      uint32 // set by Decode; Encode derives it
	FromVer     string
	Procs       []Proc
	Exits       []Exit
	Watchers    []Watcher
	Mounts      []Mount
	Forwards    []Forward
	GuestFrozen []string
}

// Proc is a running process: its descriptors are slots, -1 when absent.
type Proc struct {
	Pid                        int
	Tag                        string
	HasTag                     bool
	CgType                     string // "user", "pty" or "system"
	Config                     proc.Config
	Stdout, Stderr, Stdin, TTY int
	TimeoutMS                  int64 // 0: none
	// envd's additions (field 1001, unknown to E2B's envd): absent in an
	// E2B blob, where the log starts at the swap and the start is unknown.
	StartedAt time.Time
	Log       *proc.LogState
}

// Exit is a retained exit.
type Exit struct {
	Pid         int
	Tag         string
	HasTag      bool
	Result      proc.Result
	RemainingMS int64
	// envd's additions, as in Proc; Report nil in an E2B blob.
	Report *proc.ExitReport
	Log    *proc.LogState
	PTY    bool
}

// Forward is a port forward of E2B's socat-based forwarder. envd forwards
// in-process (nothing survives execve, and the new image's first scan
// forwards again), so it writes none; read ones are only counted.
type Forward struct {
	Key         string
	Port        uint32
	ListenerPid int32
	Family      uint32
	SocatPid    int32
}

// Encode writes s in HandoverState format with the lowest schema that can
// carry it: 2 only for a non-empty guest-frozen record, so a schema-1
// reader still accepts the common blob.
func Encode(s State) ([]byte, error) {
	m := &upb.HandoverState{Schema: 1, FromVer: s.FromVer, GuestFrozenCgroups: s.GuestFrozen}
	if len(s.GuestFrozen) > 0 {
		m.Schema = 2
	}
	for _, p := range s.Procs {
		c := &pb.ProcessConfig{Cmd: p.Config.Cmd, Args: p.Config.Args, Envs: p.Config.Envs, Cwd: p.Config.Cwd}
		m.Processes = append(m.Processes, &upb.HandoverProc{
			Pid: uint32(p.Pid), Tag: p.Tag, HasTag: p.HasTag, CgType: p.CgType, Config: c,
			StdoutFd: int32(p.Stdout), StderrFd: int32(p.Stderr), StdinFd: int32(p.Stdin), TtyFd: int32(p.TTY),
			TimeoutMs: p.TimeoutMS,
			Envd:      envdProc(p),
		})
	}
	for _, e := range s.Exits {
		end := &pb.ProcessEvent_EndEvent{ExitCode: int32(e.Result.ExitCode), Exited: e.Result.Exited, Status: e.Result.Status}
		if e.Result.Err != "" {
			end.Error = proto.String(e.Result.Err)
		}
		m.Terminated = append(m.Terminated, &upb.HandoverExit{
			Pid: uint32(e.Pid), Tag: e.Tag, HasTag: e.HasTag, End: end, RemainingMs: e.RemainingMS,
			Envd: envdExit(e),
		})
	}
	for _, w := range s.Watchers {
		m.Watchers = append(m.Watchers, &upb.HandoverWatcher{
			Id: w.ID, Path: w.Path, Recursive: w.Recursive, IncludeEntryInfo: w.IncludeEntry, PendingEvents: w.Pending,
		})
	}
	for _, mt := range s.Mounts {
		m.Mounts = append(m.Mounts, &upb.MountEntry{Path: mt.Path, LifecycleId: mt.LifecycleID})
	}
	for _, f := range s.Forwards {
		m.Forwards = append(m.Forwards, &upb.ForwardedPort{
			Key: f.Key, Port: f.Port, ListenerPid: f.ListenerPid, Family: f.Family, SocatPid: f.SocatPid,
		})
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode handover: %w", err)
	}
	return b, nil
}

// Decode reads a HandoverState blob; a schema above MaxSchema is refused.
// Absent fields decode as defaults, as proto3 has it.
func Decode(b []byte) (State, error) {
	var m upb.HandoverState
	if err := proto.Unmarshal(b, &m); err != nil {
		return State{}, fmt.Errorf("decode handover: %w", err)
	}
	if m.GetSchema() > MaxSchema {
		return State{}, fmt.Errorf("%w: %d > %d", ErrSchema, m.GetSchema(), MaxSchema)
	}
	s := State{Schema: m.GetSchema(), FromVer: m.GetFromVer(), GuestFrozen: m.GetGuestFrozenCgroups()}
	for _, p := range m.GetProcesses() {
		c := p.GetConfig()
		s.Procs = append(s.Procs, Proc{
			Pid: int(p.GetPid()), Tag: p.GetTag(), HasTag: p.GetHasTag(), CgType: p.GetCgType(),
			Config: proc.Config{Cmd: c.GetCmd(), Args: c.GetArgs(), Envs: c.GetEnvs(), Cwd: c.Cwd},
			Stdout: int(p.GetStdoutFd()), Stderr: int(p.GetStderrFd()), Stdin: int(p.GetStdinFd()), TTY: int(p.GetTtyFd()),
			TimeoutMS: p.GetTimeoutMs(),
			StartedAt: fromUnixNS(p.GetEnvd().GetStartedAtUnixNs()),
			Log:       logState(p.GetEnvd().GetOutput()),
		})
	}
	for _, e := range m.GetTerminated() {
		end := e.GetEnd()
		s.Exits = append(s.Exits, Exit{
			Pid: int(e.GetPid()), Tag: e.GetTag(), HasTag: e.GetHasTag(),
			Result:      proc.Result{ExitCode: int(end.GetExitCode()), Exited: end.GetExited(), Status: end.GetStatus(), Err: end.GetError()},
			RemainingMS: e.GetRemainingMs(),
			Report:      exitReport(e.GetEnvd()),
			Log:         logState(e.GetEnvd().GetOutput()),
			PTY:         e.GetEnvd().GetPty(),
		})
	}
	for _, w := range m.GetWatchers() {
		s.Watchers = append(s.Watchers, Watcher{
			ID: w.GetId(), Path: w.GetPath(), Recursive: w.GetRecursive(), IncludeEntry: w.GetIncludeEntryInfo(),
			Pending: w.GetPendingEvents(),
		})
	}
	for _, mt := range m.GetMounts() {
		s.Mounts = append(s.Mounts, Mount{Path: mt.GetPath(), LifecycleID: mt.GetLifecycleId()})
	}
	for _, f := range m.GetForwards() {
		s.Forwards = append(s.Forwards, Forward{
			Key: f.GetKey(), Port: f.GetPort(), ListenerPid: f.GetListenerPid(), Family: f.GetFamily(), SocatPid: f.GetSocatPid(),
		})
	}
	return s, nil
}

func envdProc(p Proc) *upb.EnvdProc {
	if p.Log == nil && p.StartedAt.IsZero() {
		return nil
	}
	return &upb.EnvdProc{Output: outputLog(p.Log), StartedAtUnixNs: unixNS(p.StartedAt)}
}

func envdExit(e Exit) *upb.EnvdExit {
	if e.Log == nil && e.Report == nil && !e.PTY {
		return nil
	}
	m := &upb.EnvdExit{Output: outputLog(e.Log), Report: reportPB(e.Report), Pty: e.PTY}
	if e.Report != nil {
		m.StartedAtUnixNs, m.EndedAtUnixNs = unixNS(e.Report.StartedAt), unixNS(e.Report.EndedAt)
	}
	return m
}

func outputLog(l *proc.LogState) *upb.OutputLog {
	if l == nil {
		return nil
	}
	st := func(s proc.StreamLogState) *upb.OutputStreamLog {
		return &upb.OutputStreamLog{Start: s.Start, End: s.End, Dropped: s.Dropped, Data: s.Pieces}
	}
	return &upb.OutputLog{
		Stdout: st(l.Streams[proc.Stdout]), Stderr: st(l.Streams[proc.Stderr]), Pty: st(l.Streams[proc.PTY]),
		Dropped: l.Dropped,
	}
}

func logState(m *upb.OutputLog) *proc.LogState {
	if m == nil {
		return nil
	}
	l := &proc.LogState{Dropped: m.GetDropped()}
	for i, s := range []*upb.OutputStreamLog{m.GetStdout(), m.GetStderr(), m.GetPty()} {
		l.Streams[i] = proc.StreamLogState{Start: s.GetStart(), End: s.GetEnd(), Dropped: s.GetDropped(), Pieces: s.GetData()}
	}
	return l
}

// reportPB is envd.v1's wire form of an exit report.
func reportPB(r *proc.ExitReport) *epb.ExitReport {
	if r == nil {
		return nil
	}
	m := &epb.ExitReport{
		Pid: uint32(r.Pid), Tag: r.Tag, HasTag: r.HasTag, ExitCode: int32(r.ExitCode), Signal: r.Signal,
		CoreDumped: r.CoreDumped, OomKilled: r.OOMKilled,
		StartedAtUnixMs: unixMS(r.StartedAt), EndedAtUnixMs: unixMS(r.EndedAt),
		StdoutBytes: r.StdoutBytes, StderrBytes: r.StderrBytes, PtyBytes: r.PTYBytes, DroppedBytes: r.DroppedBytes,
		Unavailable: r.Unavailable,
	}
	if !r.StartedAt.IsZero() && !r.EndedAt.IsZero() {
		m.WallUsec = uint64(max(r.EndedAt.Sub(r.StartedAt).Microseconds(), 0))
	}
	if r.HasPeakMemory {
		m.PeakMemoryBytes = proto.Uint64(r.PeakMemory)
	}
	if r.HasCPU {
		m.CpuUserUsec, m.CpuSystemUsec = proto.Uint64(r.CPUUserUsec), proto.Uint64(r.CPUSystemUsec)
	}
	return m
}

func exitReport(x *upb.EnvdExit) *proc.ExitReport {
	m := x.GetReport()
	if m == nil {
		return nil
	}
	r := &proc.ExitReport{
		Pid: int(m.GetPid()), Tag: m.GetTag(), HasTag: m.GetHasTag(), ExitCode: int(m.GetExitCode()), Signal: m.GetSignal(),
		CoreDumped: m.GetCoreDumped(), OOMKilled: m.GetOomKilled(),
		StartedAt: fromUnixMS(m.GetStartedAtUnixMs()), EndedAt: fromUnixMS(m.GetEndedAtUnixMs()),
		StdoutBytes: m.GetStdoutBytes(), StderrBytes: m.GetStderrBytes(), PTYBytes: m.GetPtyBytes(), DroppedBytes: m.GetDroppedBytes(),
		Unavailable: m.GetUnavailable(),
	}
	if ns := x.GetStartedAtUnixNs(); ns != 0 {
		r.StartedAt = fromUnixNS(ns)
	}
	if ns := x.GetEndedAtUnixNs(); ns != 0 {
		r.EndedAt = fromUnixNS(ns)
	}
	if m.PeakMemoryBytes != nil {
		r.PeakMemory, r.HasPeakMemory = m.GetPeakMemoryBytes(), true
	}
	if m.CpuUserUsec != nil || m.CpuSystemUsec != nil {
		r.CPUUserUsec, r.CPUSystemUsec, r.HasCPU = m.GetCpuUserUsec(), m.GetCpuSystemUsec(), true
	}
	return r
}

// unixMS, unixNS and their inverses keep the zero time as 0.
func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromUnixMS(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func unixNS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNS(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
