package upgrade

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

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
}

// Exit is a retained exit.
type Exit struct {
	Pid         int
	Tag         string
	HasTag      bool
	Result      proc.Result
	RemainingMS int64
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
		})
	}
	for _, e := range s.Exits {
		end := &pb.ProcessEvent_EndEvent{ExitCode: int32(e.Result.ExitCode), Exited: e.Result.Exited, Status: e.Result.Status}
		if e.Result.Err != "" {
			end.Error = proto.String(e.Result.Err)
		}
		m.Terminated = append(m.Terminated, &upb.HandoverExit{
			Pid: uint32(e.Pid), Tag: e.Tag, HasTag: e.HasTag, End: end, RemainingMs: e.RemainingMS,
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
		})
	}
	for _, e := range m.GetTerminated() {
		end := e.GetEnd()
		s.Exits = append(s.Exits, Exit{
			Pid: int(e.GetPid()), Tag: e.GetTag(), HasTag: e.GetHasTag(),
			Result:      proc.Result{ExitCode: int(end.GetExitCode()), Exited: end.GetExited(), Status: end.GetStatus(), Err: end.GetError()},
			RemainingMS: e.GetRemainingMs(),
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
