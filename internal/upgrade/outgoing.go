package upgrade

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotFrozen aborts a handover whose workload did not settle frozen.
var ErrNotFrozen = errors.New("handover aborted: freeze workload: workload was not frozen before the handover")

// Upgrader performs the outgoing half of a live upgrade.
type Upgrader struct {
	Version  string
	BlobPath string // <run dir>/e2b/envd-handover.pb
	Procs    Processes
	Watchers Watchers // nil: none
	Mounts   Mounts   // nil: no ledger
	Freezer  Freezer  // nil: cgroups are off, nothing to freeze
	// Argv is the running envd's command line (os.Args); the new image
	// gets the same arguments plus ResumeFlag.
	Argv    []string
	Environ func() []string                             // nil: os.Environ
	Exec    func(path string, argv, env []string) error // nil: syscall.Exec
	Now     func() time.Time                            // nil: time.Now
	Log     *slog.Logger
}

// Upgrade hands over to the binary at target. On success it does not
// return: the process image is replaced and every socket, being CLOEXEC,
// closes. On failure the old envd goes on serving with its workload thawed
// and its locks released.
func (u *Upgrader) Upgrade(target string) error {
	now := time.Now
	if u.Now != nil {
		now = u.Now
	}
	var undo []func() // in reverse order on failure
	fail := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return err
	}

	// 1. Freeze, holding the freezer's lock until execve.
	if u.Freezer != nil {
		u.Freezer.Lock()
		undo = append(undo, u.Freezer.Unlock)
		undo = append(undo, func() {
			if err := u.Freezer.ThawLocked(); err != nil {
				u.log().Warn("thaw after aborted upgrade", "err", err)
			}
		})
		if err := u.Freezer.FreezeLocked(HandoverFreezeWait); err != nil {
			u.log().Warn("upgrade freeze", "err", err)
			return fail(ErrNotFrozen)
		}
	}
	st := State{FromVer: u.Version}
	if u.Freezer != nil {
		st.GuestFrozen = u.Freezer.GuestFrozen()
	}

	// 2. Snapshot the watchers, keeping their registry blocked, and the ledger.
	if u.Watchers != nil {
		ws, release := u.Watchers.Freeze()
		undo = append(undo, release)
		st.Watchers = ws
	}
	if u.Mounts != nil {
		for path, id := range u.Mounts.Ledger() {
			st.Mounts = append(st.Mounts, Mount{Path: path, LifecycleID: id})
		}
		slices.SortFunc(st.Mounts, func(a, b Mount) int { return cmp.Compare(a.Path, b.Path) })
	}

	// 3. The process table and the reaper, then every fork in the process:
	// nothing may inherit the descriptors made inheritable below.
	live, exits, dying, release := u.Procs.Freeze()
	undo = append(undo, release)
	if dying > 0 {
		u.log().Info("upgrade: processes reaped but still draining are not carried", "count", dying)
	}
	syscall.ForkLock.Lock()
	undo = append(undo, syscall.ForkLock.Unlock)

	// 4-5. Relocate each process's descriptors onto its slots.
	var slots []int
	undo = append(undo, func() {
		for _, s := range slots {
			unix.Close(s)
		}
	})
	for i, p := range live {
		base := SlotBase + slotStride*i
		hp := Proc{Pid: p.Pid, Tag: p.Tag, HasTag: p.HasTag, Config: p.Config, CgType: "user", StartedAt: p.StartedAt, Log: p.Log}
		if p.PTY {
			hp.CgType = "pty"
		}
		for j, fs := range []struct {
			f   *os.File
			dst *int
		}{{p.Stdout, &hp.Stdout}, {p.Stderr, &hp.Stderr}, {p.Stdin, &hp.Stdin}, {p.TTY, &hp.TTY}} {
			*fs.dst = -1
			if fs.f == nil {
				continue
			}
			slot := base + j
			if err := relocate(fs.f, slot); err != nil {
				return fail(fmt.Errorf("handover aborted: pid %d: %w", p.Pid, err))
			}
			slots = append(slots, slot)
			*fs.dst = slot
		}
		hp.TimeoutMS = remainingMS(p.Deadline, now())
		st.Procs = append(st.Procs, hp)
	}

	// 6. Retained exits that still have time left.
	for _, e := range exits {
		if ms := e.Remaining.Milliseconds(); ms > 0 {
			x := Exit{Pid: e.Pid, Tag: e.Tag, HasTag: e.HasTag, Result: e.Result, RemainingMS: ms, Log: e.Log, PTY: e.PTY}
			if e.HasReport {
				x.Report = &e.Report
			}
			st.Exits = append(st.Exits, x)
		}
	}

	// 7. The blob.
	blob, err := Encode(st)
	if err != nil {
		return fail(fmt.Errorf("handover aborted: %w", err))
	}
	if err := writeBlob(u.BlobPath, blob); err != nil {
		return fail(fmt.Errorf("handover aborted: %w", err))
	}
	undo = append(undo, func() { _ = os.Remove(u.BlobPath) })

	// 8. Same-PID execve.
	argv := append([]string{target}, u.Argv[min(1, len(u.Argv)):]...)
	argv = append(argv, ResumeFlag)
	env := os.Environ
	if u.Environ != nil {
		env = u.Environ
	}
	exec := syscall.Exec
	if u.Exec != nil {
		exec = u.Exec
	}
	u.log().Info("upgrade: exec", "target", target, "procs", len(st.Procs), "exits", len(st.Exits), "watchers", len(st.Watchers))
	// Go's Exec restores the soft open-file limit it raised at start-up;
	// if the exec fails the old image must get its raised limit back.
	var lim unix.Rlimit
	limErr := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	err = exec(target, argv, env())
	if limErr == nil {
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	return fail(fmt.Errorf("execve %s: %w", target, err))
}

func (u *Upgrader) log() *slog.Logger {
	if u.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return u.Log
}

// remainingMS is a lifetime limit's time left; one already passed becomes
// 1 ms, so it still kills right after the thaw.
func remainingMS(deadline, now time.Time) int64 {
	if deadline.IsZero() {
		return 0
	}
	return max(deadline.Sub(now).Milliseconds(), 1)
}

// relocate duplicates f onto slot without CLOEXEC. f's own descriptor and
// blocking mode are left as they are (Fd would make it blocking). A slot
// already in use aborts rather than clobbering it.
func relocate(f *os.File, slot int) error {
	if _, err := unix.FcntlInt(uintptr(slot), unix.F_GETFD, 0); err != unix.EBADF {
		return fmt.Errorf("descriptor slot %d already open", slot)
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("relocate %s: %w", f.Name(), err)
	}
	var derr error
	if err := sc.Control(func(fd uintptr) { derr = unix.Dup3(int(fd), slot, 0) }); err != nil {
		return fmt.Errorf("relocate %s: %w", f.Name(), err)
	}
	if derr != nil {
		return fmt.Errorf("relocate %s onto %d: %w", f.Name(), slot, derr)
	}
	return nil
}

// writeBlob writes the blob mode 0600, atomically: a reader never sees a
// half-written one.
func writeBlob(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write handover: %w", err)
	}
	f, err := os.CreateTemp(dir, ".envd-handover-*")
	if err != nil {
		return fmt.Errorf("write handover: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write handover: %w", err)
	}
	return nil
}
