package fsops

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Errors of Compose and CheckComposeSource, for the API to map to statuses.
var (
	// ErrSourceMissing: a source cannot be stat'ed (missing, dangling
	// link, unreadable parent — any error, as E2B's envd answers 404).
	ErrSourceMissing = errors.New("source file not found")
	// ErrSourceNotRegular: a source is a directory, device, FIFO or socket.
	ErrSourceNotRegular = errors.New("source path is not a regular file")
	// ErrComposeParents: the destination's parents could not be made.
	ErrComposeParents = errors.New("error ensuring directories")
)

// CheckComposeSource is the per-source check of §18.5, following symlinks.
func CheckComposeSource(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSourceMissing, err)
	}
	if !st.Mode().IsRegular() {
		return ErrSourceNotRegular
	}
	return nil
}

// ComposeError is a failure while building the result: which source, if
// any, and the cause (ENOSPC and EDQUOT are the caller's 507).
type ComposeError struct {
	Source string // resolved source being copied, "" outside the copy
	Op     string
	Err    error
}

func (e *ComposeError) Error() string {
	if e.Source != "" {
		return fmt.Sprintf("error composing source %s: %v", e.Source, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Op, e.Err)
}

func (e *ComposeError) Unwrap() error { return e.Err }

// Compose concatenates sources, in order, into dest, then removes them
// (§7.8, §18.5). The result is built in a temporary file beside dest,
// owned by uid:gid and synced, and renamed over dest only when complete: a
// failure leaves dest as it was and no temporary file behind. The copy is
// File.ReadFrom, which on Linux is copy_file_range(2), so the data does
// not pass through envd.
//
// Sources are expected checked with CheckComposeSource; one that vanished
// since fails the copy. The sources are removed after the rename, errors
// ignored, as E2B's envd does: the result is already in place.
func Compose(sources []string, dest string, uid, gid uint32) error {
	if err := MkdirAllOwned(filepath.Dir(dest), uid, gid); err != nil {
		return fmt.Errorf("%w: %w", ErrComposeParents, err)
	}
	tmp, err := createComposeTemp(dest)
	if err != nil {
		return &ComposeError{Op: "error creating temporary file", Err: err}
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := setOwnerAndMode(tmp, int(uid), int(gid), 0); err != nil {
		return &ComposeError{Op: "error changing ownership of the result", Err: err}
	}
	for _, src := range sources {
		if err := appendFile(tmp, src); err != nil {
			return &ComposeError{Source: src, Err: err}
		}
	}
	if err := tmp.Sync(); err != nil {
		return &ComposeError{Op: "error writing the result", Err: err}
	}
	if err := tmp.Close(); err != nil {
		return &ComposeError{Op: "error writing the result", Err: err}
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return &ComposeError{Op: "error renaming the result", Err: err}
	}
	done = true
	syncDir(filepath.Dir(dest))
	for _, src := range sources {
		_ = os.Remove(src)
	}
	return nil
}

func appendFile(dst *os.File, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = dst.ReadFrom(f)
	return err
}

// createComposeTemp makes <dest>.e2b-compose.<UUIDv4>.tmp, E2B's name, with
// 0666 so the umask applies. O_EXCL: never truncate someone else's file.
func createComposeTemp(dest string) (*os.File, error) {
	for range 10 {
		name := dest + ".e2b-compose." + uuid4() + ".tmp"
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, errors.New("too many name collisions")
}

func uuid4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// composeChown skips the chown when the file already has the owner, so
// an unprivileged envd can still compose files as itself.
