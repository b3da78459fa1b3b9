// Package fsfreeze quiesces the filesystem a filesystem-only snapshot keeps
// (§18.3): FIFREEZE flushes it and blocks every later write until FITHAW.
// The target is a field, empty unless the daemon runs inside a VM, because
// FIFREEZE on the root filesystem of the machine running envd stops that
// machine.
package fsfreeze

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// The ioctls of include/uapi/linux/fs.h: _IOWR('X', 119/120, int).
const (
	fifreeze = 0xC0045877
	fithaw   = 0xC0045878
)

var (
	// ErrLockTimeout: the caller's context ended before the lock was free.
	ErrLockTimeout = errors.New("fsfreeze: context ended while waiting for the lock")
	// ErrNoTarget: no target was configured (outside a VM).
	ErrNoTarget = errors.New("fsfreeze: refused, no target filesystem (envd is not running inside a VM)")
)

// FS freezes and thaws the filesystem holding Path.
type FS struct {
	// Path is any path on the target filesystem; "" refuses every call.
	Path string
	lock chan struct{} // weight-1, separate from the cgroup freezer's
}

// New returns an FS for path ("" refuses).
func New(path string) *FS { return &FS{Path: path, lock: make(chan struct{}, 1)} }

// Hold takes the lock until release is called, so that no freeze lands
// while the holder writes to the filesystem (a live upgrade staging the
// new binary). It fails with ErrLockTimeout when ctx ends first.
func (f *FS) Hold(ctx context.Context) (release func(), err error) {
	select {
	case f.lock <- struct{}{}:
		return func() { <-f.lock }, nil
	case <-ctx.Done():
		return nil, ErrLockTimeout
	}
}

// Freeze freezes the filesystem; one already frozen (EBUSY) is success.
func (f *FS) Freeze(ctx context.Context) error {
	release, err := f.Hold(ctx)
	if err != nil {
		return err
	}
	defer release()
	return f.ioctl(fifreeze, "FIFREEZE", unix.EBUSY)
}

// Thaw thaws the filesystem; one not frozen (EINVAL) is success. It waits
// for the lock regardless of ctx: giving up would leave the machine with a
// filesystem nobody can write to. Nothing here writes to the filesystem.
func (f *FS) Thaw(ctx context.Context) error {
	_ = ctx
	f.lock <- struct{}{}
	defer func() { <-f.lock }()
	return f.ioctl(fithaw, "FITHAW", unix.EINVAL)
}

func (f *FS) ioctl(req uintptr, name string, idempotent unix.Errno) error {
	if f.Path == "" {
		return ErrNoTarget
	}
	fd, err := unix.Open(f.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", f.Path, err)
	}
	defer unix.Close(fd)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, 0); errno != 0 && errno != idempotent {
		return fmt.Errorf("%s %s: %w", name, f.Path, errno)
	}
	return nil
}
