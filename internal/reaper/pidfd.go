package reaper

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// PidFD opens a pidfd (non-blocking, so the runtime's poller watches it) for
// a registered child that has not been reaped yet. It becomes readable when
// the child exits: waiting on it wakes the waiter straight from the poller,
// without the SIGCHLD → signal goroutine → reaper goroutine hops; Reap then
// collects the status. The lock makes sure the pid was not reaped and reused
// before the pidfd pinned it.
func (r *Reaper) PidFD(pid int) (*os.File, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiters[pid]; !ok {
		return nil, ErrGone
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "pidfd"), nil
}

// Reap collects pid's status now if it has exited and is still registered,
// delivering it to its waiter as the SIGCHLD path would; otherwise it does
// nothing (the SIGCHLD path got there first, or the child still runs).
func (r *Reaper) Reap(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiters[pid]; !ok {
		return
	}
	var st syscall.WaitStatus
	if got, err := wait4(pid, &st); err == nil && got == pid {
		r.deliver(pid, st)
	}
}
