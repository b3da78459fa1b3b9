package reaper

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Hold stops all reaping and forking through the reaper until release is
// called. A live upgrade holds it from the snapshot of the process table to
// execve: a child reaped in that window would have its status lost with the
// old image, and a child forked in it could inherit the descriptors the
// handover makes inheritable.
func (r *Reaper) Hold() *Hold {
	r.mu.Lock()
	return &Hold{r: r}
}

// Hold is the reaper stopped by Hold.
type Hold struct{ r *Reaper }

// Waiting reports whether pid is a registered child not reaped yet.
func (h *Hold) Waiting(pid int) bool {
	_, ok := h.r.waiters[pid]
	return ok
}

// Release lets reaping and forking go on.
func (h *Hold) Release() { h.r.mu.Unlock() }

// Adopt registers pid, a child this process already has (one its previous
// image started before a same-PID execve), as if Start had forked it. Its
// status arrives on the channel exactly once. A pid that is not our child,
// or was reaped already, is refused.
func (r *Reaper) Adopt(pid int) (<-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiters[pid]; ok {
		return nil, fmt.Errorf("adopt pid %d: already registered", pid)
	}
	// WNOWAIT only peeks: a child that already exited stays a zombie for
	// reap to collect below.
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("adopt pid %d: %w", pid, err)
		}
		break
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = ch
	select {
	case r.sigc <- syscall.SIGCHLD:
	default:
	}
	return ch, nil
}
