package fswatch

import (
	"errors"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxIdleInstances bounds the inotify instances a Pool keeps.
const maxIdleInstances = 8

// Pool keeps the inotify instances of ended watches for the next ones.
// Closing an instance waits in the kernel for an SRCU grace period (about
// 8 ms on the development machine), holding a thread all that time, and
// instances are limited per user (fs.inotify.max_user_instances, 128 by
// default): clients that start and drop watches quickly ran envd out of
// instances while the closes were still pending, and their next watch failed.
// A Pool is safe for concurrent use; the zero value is ready.
type Pool struct {
	mu     sync.Mutex
	idle   []*os.File
	closed bool
}

// get returns an idle instance, or a new one.
func (p *Pool) get() (*os.File, error) {
	if p != nil {
		p.mu.Lock()
		if n := len(p.idle); n > 0 {
			f := p.idle[n-1]
			p.idle = p.idle[:n-1]
			p.mu.Unlock()
			return f, nil
		}
		p.mu.Unlock()
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	// A non-blocking fd wrapped in os.File uses the runtime poller, so a
	// read deadline (or Close) from another goroutine wakes a blocked Read.
	return os.NewFile(uintptr(fd), "inotify"), nil
}

// put takes back an instance with no watches left. What is still queued in
// it (the IN_IGNORED of each removed watch, events that raced the removal)
// is read and dropped, and anything that arrives later names a watch
// descriptor the next user never got: the kernel hands them out cyclically,
// and Watcher ignores the ones it does not know.
func (p *Pool) put(f *os.File) {
	// The deadline that woke the last Read goes first: past it, reads fail
	// before they are tried.
	if p == nil || f.SetReadDeadline(time.Time{}) != nil || !drain(f) {
		f.Close()
		return
	}
	p.mu.Lock()
	if p.closed || len(p.idle) >= maxIdleInstances {
		p.mu.Unlock()
		f.Close()
		return
	}
	p.idle = append(p.idle, f)
	p.mu.Unlock()
}

// Close closes the idle instances; instances put back later are closed.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, f := range idle {
		f.Close()
	}
}

// drain reads f until it is empty, and reports whether it got there.
func drain(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	buf := make([]byte, 4096)
	ok := false
	err = rc.Read(func(fd uintptr) bool {
		for {
			_, err := unix.Read(int(fd), buf)
			switch {
			case err == nil:
				continue
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				ok = true
			}
			return true // never wait for more
		}
	})
	return err == nil && ok
}
