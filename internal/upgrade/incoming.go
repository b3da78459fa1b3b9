package upgrade

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/proc"
)

// Report is the X-Envd-Handover header's content: each pair is what was
// carried and the part of it that could not be restored.
type Report struct {
	Failed         bool `json:"failed"`
	Procs          int  `json:"procs"`
	ProcsFailed    int  `json:"procs_failed"`
	Retained       int  `json:"retained"`
	RetainedFailed int  `json:"retained_failed"`
	Watchers       int  `json:"watchers"`
	WatchersFailed int  `json:"watchers_failed"`
}

// Adopted is a re-adopted process with the lifetime it had left; the
// timer starts when the workload is next thawed.
type Adopted struct {
	Proc    *proc.Process
	Timeout time.Duration // 0: none
}

// Restorer performs the incoming half: run once at start-up by an envd
// started with -resume-handover, before it serves.
type Restorer struct {
	BlobPath string
	Procs    Processes
	Watchers Watchers // nil: watchers are dropped
	Mounts   Mounts   // nil: the ledger is dropped
	Freezer  Freezer  // nil: cgroups are off
	// FDDir lists this process's descriptors (/proc/self/fd), to close
	// inheritable slots nobody took over.
	FDDir string
	Log   *slog.Logger
}

// Restore reads the blob and takes over what it describes. A missing blob
// adopts nothing; an unreadable one, or one of a newer schema, fails the
// whole handover (there is no way back to the old image after execve): the
// carried descriptors are closed and nothing is re-adopted. In both cases
// the caller should thaw at once (thaw reports it); otherwise the workload
// stays frozen until the first /init.
func (r *Restorer) Restore() (rep Report, adopted []Adopted, thaw bool) {
	defer r.closeStraySlots()
	b, err := os.ReadFile(r.BlobPath)
	if errors.Is(err, os.ErrNotExist) {
		r.log().Warn("resume-handover without a handover blob; nothing to adopt", "path", r.BlobPath)
		return Report{}, nil, true
	}
	var st State
	if err == nil {
		st, err = decodeSafely(b)
	}
	if err != nil {
		r.log().Error("handover failed", "path", r.BlobPath, "err", err)
		_ = os.Remove(r.BlobPath)
		return Report{Failed: true}, nil, true
	}

	// 2. Processes.
	rep.Procs = len(st.Procs)
	for _, p := range st.Procs {
		a, err := r.adopt(p)
		if err != nil {
			rep.ProcsFailed++
			r.log().Warn("handover: process not re-adopted", "pid", p.Pid, "err", err)
			continue
		}
		adopted = append(adopted, Adopted{Proc: a, Timeout: time.Duration(p.TimeoutMS) * time.Millisecond})
	}

	// 3. Retained exits.
	rep.Retained = len(st.Exits)
	for _, e := range st.Exits {
		x := proc.ExportedExit{
			Pid: e.Pid, Tag: e.Tag, HasTag: e.HasTag, Result: e.Result,
			Remaining: time.Duration(e.RemainingMS) * time.Millisecond, Log: e.Log, PTY: e.PTY,
		}
		if e.Report != nil {
			x.Report, x.HasReport = *e.Report, true
		}
		err := r.Procs.AdoptExit(x)
		if err != nil {
			rep.RetainedFailed++
			r.log().Warn("handover: retained exit not restored", "pid", e.Pid, "err", err)
		}
	}

	// 4. The blob has been consumed.
	if err := os.Remove(r.BlobPath); err != nil {
		r.log().Warn("remove handover blob", "err", err)
	}

	// 5. Polling watchers.
	rep.Watchers = len(st.Watchers)
	for _, w := range st.Watchers {
		if r.Watchers == nil {
			rep.WatchersFailed++
			continue
		}
		if err := r.Watchers.Restore(w); err != nil {
			rep.WatchersFailed++
			r.log().Warn("handover: watcher dropped", "id", w.ID, "err", err)
		}
	}

	// 6. The freeze of the old image stays in effect until /init.
	if r.Freezer != nil {
		r.Freezer.Restore(st.GuestFrozen)
	}

	// 7. The ledger; E2B's socat forwards have no counterpart here (the
	// port scan forwards in-process again).
	if r.Mounts != nil {
		ledger := make(map[string]string, len(st.Mounts))
		for _, m := range st.Mounts {
			ledger[m.Path] = m.LifecycleID
		}
		r.Mounts.Restore(ledger)
	}
	if len(st.Forwards) > 0 {
		r.log().Info("handover: socat forwards not adopted; ports are forwarded in-process", "count", len(st.Forwards))
	}
	r.log().Info("handover restored", "from", st.FromVer, "procs", rep.Procs, "procs_failed", rep.ProcsFailed,
		"retained", rep.Retained, "retained_failed", rep.RetainedFailed, "watchers", rep.Watchers, "watchers_failed", rep.WatchersFailed)
	return rep, adopted, r.Freezer == nil
}

// decodeSafely turns a panic in decoding into a failed handover.
func decodeSafely(b []byte) (st State, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("decode handover: panic: %v", p)
		}
	}()
	return Decode(b)
}

func (r *Restorer) adopt(p Proc) (*proc.Process, error) {
	a := proc.Adoption{Pid: p.Pid, Tag: p.Tag, HasTag: p.HasTag, Config: p.Config, StartedAt: p.StartedAt, Log: p.Log}
	var err error
	for _, s := range []struct {
		slot int
		dst  **os.File
		name string
	}{{p.Stdout, &a.Stdout, "stdout"}, {p.Stderr, &a.Stderr, "stderr"}, {p.Stdin, &a.Stdin, "stdin"}, {p.TTY, &a.TTY, "pty"}} {
		if s.slot < 0 {
			continue
		}
		f, ferr := takeSlot(s.slot, fmt.Sprintf("pid %d %s", p.Pid, s.name))
		if ferr != nil {
			err = errors.Join(err, ferr)
			continue
		}
		*s.dst = f
	}
	if err != nil {
		for _, f := range []*os.File{a.Stdout, a.Stderr, a.Stdin, a.TTY} {
			if f != nil {
				f.Close()
			}
		}
		return nil, err
	}
	return r.Procs.Adopt(a)
}

// takeSlot moves an inherited descriptor off its slot to a fresh CLOEXEC
// one (so a chained upgrade finds the slots free and no child inherits it)
// and wraps it.
func takeSlot(slot int, name string) (*os.File, error) {
	fd, err := unix.FcntlInt(uintptr(slot), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("take descriptor slot %d: %w", slot, err)
	}
	unix.Close(slot)
	// Non-blocking, so the file joins the poller and closing it interrupts a
	// pending read (E2B's envd may hand over a blocking pty master).
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("take descriptor slot %d: %w", slot, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// closeStraySlots closes every inheritable descriptor at or above SlotBase:
// slots of processes that were not adopted, or of a blob that could not be
// read. Go opens everything CLOEXEC, so these can only be inherited ones,
// and left open they would leak into every process envd starts.
func (r *Restorer) closeStraySlots() {
	dir := r.FDDir
	if dir == "" {
		dir = "/proc/self/fd"
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		r.log().Warn("list descriptors", "err", err)
		return
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(filepath.Base(e.Name()))
		if err != nil || fd < SlotBase {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
		}
	}
}

func (r *Restorer) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}
