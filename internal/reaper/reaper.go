// Package reaper collects the exit status of envd's children. It is the only
// code in envd that calls wait4 on processes it did not start through os/exec:
// callers fork through Reaper.Start, which registers the new pid before the
// child can be reaped, and receive its wait status on a channel.
//
// With ReapOrphans set (the real binary) it waits for any child, so orphans
// re-parented to envd — as PID 1 or as a child subreaper — are reaped too. That
// mode steals the status of children started with os/exec elsewhere in the
// process, so in-process tests leave it off and only registered pids are waited.
package reaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reaper dispatches exit statuses to the goroutines that started the children.
type Reaper struct {
	reapOrphans bool
	log         *slog.Logger

	// mu is held across fork+register, signal delivery and reaping, so a pid
	// is never reaped before its waiter exists nor reused while being signalled.
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus

	sigc chan os.Signal
}

// ErrGone means the pid has already been reaped (or was never ours).
var ErrGone = errors.New("process already exited")

// New subscribes to SIGCHLD at once, so exits before Run starts are not missed.
// With reapOrphans it also makes envd the child subreaper unless it is PID 1.
func New(log *slog.Logger, reapOrphans bool) (*Reaper, error) {
	r := &Reaper{
		reapOrphans: reapOrphans,
		log:         log,
		waiters:     map[int]chan syscall.WaitStatus{},
		sigc:        make(chan os.Signal, 1),
	}
	if reapOrphans && os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("become child subreaper: %w", err)
		}
	}
	signal.Notify(r.sigc, syscall.SIGCHLD)
	return r, nil
}

// Run reaps on every SIGCHLD until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	defer signal.Stop(r.sigc)
	r.reap()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.sigc:
			r.reap()
		}
	}
}

// Start calls fork with the lock held and registers the pid it returns. The
// channel receives the child's wait status exactly once.
func (r *Reaper) Start(fork func() (int, error)) (int, <-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := fork()
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = ch
	// SIGCHLD may have fired between fork and now; make sure it is seen.
	select {
	case r.sigc <- syscall.SIGCHLD:
	default:
	}
	return pid, ch, nil
}

// KillGroup sends sig to the process group led by pid, provided pid is a
// registered child that has not been reaped yet.
func (r *Reaper) KillGroup(pid int, sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiters[pid]; !ok {
		return ErrGone
	}
	if err := syscall.Kill(-pid, sig); err != nil {
		// The leader may have left its group (setpgid/setsid of its own); it
		// is still ours, so signal it directly.
		if errors.Is(err, syscall.ESRCH) {
			return syscall.Kill(pid, sig)
		}
		return err
	}
	return nil
}

func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reapOrphans {
		r.reapAny()
		return
	}
	for pid := range r.waiters {
		var st syscall.WaitStatus
		got, err := wait4(pid, &st)
		if err != nil {
			// ECHILD: someone else reaped it. Report an abnormal exit rather
			// than leave the waiter hanging forever.
			r.log.Warn("wait for child failed", "pid", pid, "err", err)
			st, got = syscall.WaitStatus(0xff00), pid // exit status 255
		}
		if got == pid {
			r.deliver(pid, st)
		}
	}
}

// reapAny waits for every child that has exited, registered or not.
func (r *Reaper) reapAny() {
	for {
		var st syscall.WaitStatus
		pid, err := wait4(-1, &st)
		if err != nil || pid <= 0 {
			return
		}
		r.deliver(pid, st)
	}
}

func wait4(pid int, st *syscall.WaitStatus) (int, error) {
	for {
		got, err := syscall.Wait4(pid, st, syscall.WNOHANG, nil)
		if err != syscall.EINTR {
			return got, err
		}
	}
}

func (r *Reaper) deliver(pid int, st syscall.WaitStatus) {
	if st.Stopped() || st.Continued() {
		return
	}
	ch, ok := r.waiters[pid]
	if !ok {
		r.log.Debug("reaped orphan", "pid", pid, "status", st)
		return
	}
	delete(r.waiters, pid)
	ch <- st
}
