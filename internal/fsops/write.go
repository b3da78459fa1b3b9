package fsops

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/envd-dev/envd/internal/fsmeta"
)

var (
	// ErrIsDir is a write whose target is a directory.
	ErrIsDir = errors.New("is a directory")
	// ErrNotRegular is a write whose target is a device, FIFO or socket:
	// replacing it with a file is never what a write means.
	ErrNotRegular = errors.New("not a regular file")
	// ErrSource marks a failure of the reader a write copies from, as
	// opposed to the disk; the reader's own error is wrapped too.
	ErrSource = errors.New("reading the source failed")
	// ErrNoSpace marks a write that failed because the disk or its inodes
	// are full (ENOSPC, EDQUOT) while storing the content.
	ErrNoSpace = errors.New("not enough space")
)

// writeError is one failed step of WriteFile. Its message is the one clients
// are shown; errors.Is finds both its kind and the OS error below it.
type writeError struct {
	msg  string
	kind error // nil for failures nothing here anticipates
	err  error
}

func (e *writeError) Error() string { return e.msg }

func (e *writeError) Unwrap() []error {
	var out []error
	for _, err := range []error{e.kind, e.err} {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

func failed(kind, cause error, format string, args ...any) error {
	return &writeError{msg: fmt.Sprintf(format, args...), kind: kind, err: cause}
}

// sourceError wraps what the reader returned, so callers can word it as a
// fault of their input.
type sourceError struct{ err error }

func (e sourceError) Error() string   { return e.err.Error() }
func (e sourceError) Unwrap() []error { return []error{ErrSource, e.err} }

// IsNoSpace reports the errors §7.7 and §18.5 answer with 507.
func IsNoSpace(err error) bool {
	return errors.Is(err, ErrNoSpace) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Writer stores files atomically: the content goes to a temporary file
// beside the target, which replaces the target only after all of it has
// been read and has reached the disk. Any failure removes the temporary
// file and leaves the old content as it was; concurrent writes to one path
// each rename a complete file, so the last rename wins whole.
//
// The temporary names carry a tag keyed by this Writer, so watchers in the
// same process can tell them (Staged) from any file another process makes,
// however it is named.
type Writer struct {
	log *slog.Logger
	key [32]byte
}

// NewWriter returns a Writer with a fresh key; share one between the code
// that writes and the watchers that must recognise its temporary files.
func NewWriter(log *slog.Logger) *Writer {
	w := &Writer{log: log}
	_, _ = rand.Read(w.key[:]) // never fails on Linux (getrandom)
	return w
}

// WriteOptions say who owns a new file and what it carries.
type WriteOptions struct {
	// UID and GID own a new file and the parent directories created for
	// it; a replaced file keeps its owner and mode.
	UID, GID uint32
	// Metadata replaces the file's user.e2b.* attributes; nil clears them.
	Metadata map[string]string
	// Size is how many bytes the caller announced, for the message of a
	// full disk; 0 or less if unknown.
	Size int64
}

// WriteFile stores what src yields at path, creating missing parents. A
// symlink at path is written through, as an in-place write would, instead
// of being replaced by a file. It returns the number of bytes stored.
func (wr *Writer) WriteFile(path string, src io.Reader, opt WriteOptions) (int64, error) {
	if err := MkdirAllOwned(filepath.Dir(path), opt.UID, opt.GID); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) && errors.Is(err, syscall.ENOTDIR) {
			return 0, failed(ErrNotDir, err, "error ensuring directories: path is a file: %s", nonDir(pe.Path))
		}
		return 0, failed(nil, err, "error ensuring directories: %v", err)
	}
	real := path
	if lst, err := os.Lstat(path); err == nil && lst.Mode()&fs.ModeSymlink != 0 {
		if target, err := filepath.EvalSymlinks(path); err == nil {
			real = target
		}
	}
	uid, gid, mode := int(opt.UID), int(opt.GID), fs.FileMode(0)
	st, err := os.Stat(real)
	replaces := err == nil
	switch {
	case err == nil && st.IsDir():
		return 0, failed(ErrIsDir, nil, "path is a directory: %s", path)
	case err == nil && !st.Mode().IsRegular():
		return 0, failed(ErrNotRegular, nil, "path is not a regular file: %s", path)
	case err == nil:
		sys := st.Sys().(*syscall.Stat_t)
		uid, gid, mode = int(sys.Uid), int(sys.Gid), st.Mode()
	case !errors.Is(err, fs.ErrNotExist):
		return 0, failed(nil, err, "error checking path %s: %v", path, err)
	}

	tmp, err := wr.createTemp(real, replaces)
	if err != nil {
		if IsNoSpace(err) {
			return 0, failed(ErrNoSpace, err, "not enough inodes available: %v", err)
		}
		return 0, failed(nil, err, "error opening file: %v", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := setOwnerAndMode(tmp, uid, gid, mode); err != nil {
		return 0, failed(nil, err, "error changing ownership of %s: %v", path, err)
	}

	size, err := pipeCopy(&writebackFile{f: tmp}, src)
	if err == nil {
		err = tmp.Sync()
	}
	if err != nil {
		return 0, copyError(err, opt.Size)
	}
	if err := fsmeta.Replace(tmp.Name(), opt.Metadata); err != nil {
		switch {
		case errors.Is(err, fsmeta.ErrUnsupported):
			if len(opt.Metadata) > 0 {
				wr.log.Warn("file system has no user xattrs; metadata dropped", "path", path)
			}
		case IsNoSpace(err):
			return 0, failed(ErrNoSpace, err, "not enough disk space available for metadata: %v", err)
		default:
			return 0, failed(nil, err, "error setting metadata: %v", err)
		}
	}
	if err := os.Rename(tmp.Name(), real); err != nil {
		if IsNoSpace(err) {
			return 0, failed(ErrNoSpace, err, "not enough disk space available: %v", err)
		}
		return 0, failed(nil, err, "error writing file: %v", err)
	}
	done = true
	// An in-place write ends with a modification of the file under its own
	// name, which inotify users in the sandbox wait for; the rename alone is
	// a move. Truncating our inode to its own size changes nothing yet raises
	// IN_MODIFY under the new name; this process's watchers report it as the
	// write's last WRITE (see Staged). It goes through our fd, so if a
	// concurrent write has already replaced the name, it touches only our
	// now-unlinked file. An empty file had no write to report.
	if size > 0 {
		_ = tmp.Truncate(size)
	}
	if err := tmp.Close(); err != nil {
		wr.log.Warn("close uploaded file", "path", path, "err", err)
	}
	syncDir(filepath.Dir(real))
	return size, nil
}

// nonDir names the ancestor of p (or p) that exists and is not a
// directory, which is what made creating p fail with ENOTDIR.
func nonDir(p string) string {
	for q := p; q != "/" && q != "."; q = filepath.Dir(q) {
		if st, err := os.Stat(q); err == nil && !st.IsDir() {
			return q
		}
	}
	return p
}

func copyError(err error, announced int64) error {
	switch {
	case errors.Is(err, ErrSource):
		return err
	case IsNoSpace(err):
		if announced > 0 {
			return failed(ErrNoSpace, err, "attempted to write %d bytes: not enough disk space available", announced)
		}
		return failed(ErrNoSpace, err, "not enough disk space available")
	}
	return failed(nil, err, "error writing file: %v", err)
}

// The temporary name is "." + target name + tempMarker + kind + nonce + tag,
// kind telling whether the write replaces an existing file and tag an HMAC
// of kind and nonce under the Writer's key.
const (
	tempMarker   = ".envd-upload-"
	kindNew      = 'n'
	kindReplace  = 'r'
	nonceLen     = 8
	tagLen       = 8
	tempTailLen  = 1 + 2*nonceLen + 2*tagLen
	maxTempStart = nameMax - 1 - len(tempMarker) - tempTailLen
)

func (wr *Writer) tag(kind byte, nonce []byte) []byte {
	mac := hmac.New(sha256.New, wr.key[:])
	mac.Write([]byte{kind})
	mac.Write(nonce)
	return mac.Sum(nil)[:tagLen]
}

// createTemp makes a hidden file next to target. Opening with 0666 lets the
// kernel apply the umask, so a new file gets the usual 0644.
func (wr *Writer) createTemp(target string, replaces bool) (*os.File, error) {
	dir, base := filepath.Split(target)
	if len(base) > maxTempStart {
		base = base[:maxTempStart] // the suffix must fit within NAME_MAX
	}
	kind := byte(kindNew)
	if replaces {
		kind = kindReplace
	}
	for range 10 {
		var nonce [nonceLen]byte
		_, _ = rand.Read(nonce[:])
		name := filepath.Join(dir, "."+base+tempMarker+string(kind)+hex.EncodeToString(nonce[:])+hex.EncodeToString(wr.tag(kind, nonce[:])))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, errors.New("create temporary file: too many name collisions")
}

// Staged reports whether name (a base name) is a temporary file of this
// Writer, and whether the write it belongs to replaces an existing file.
// The write's rename of it into place is followed by one modification of
// the target (an empty file excepted), so a watcher that hides the
// temporary name and reports the rename as CREATE, CHMOD (new file) or
// CHMOD, WRITE (replacement) reports the whole write as the in-place write
// of the same content would have been seen.
func (wr *Writer) Staged(name string) (replaces, ok bool) {
	i := strings.LastIndex(name, tempMarker)
	if i < 1 || name[0] != '.' || len(name)-i-len(tempMarker) != tempTailLen {
		return false, false
	}
	tail := name[i+len(tempMarker):]
	kind := tail[0]
	if kind != kindNew && kind != kindReplace {
		return false, false
	}
	raw, err := hex.DecodeString(tail[1:])
	if err != nil {
		return false, false
	}
	if !hmac.Equal(raw[nonceLen:], wr.tag(kind, raw[:nonceLen])) {
		return false, false
	}
	return kind == kindReplace, true
}

// setOwnerAndMode gives the temporary file the owner (and, when replacing,
// the mode) the target should end with. Chown comes first because it clears
// set-id bits. Nothing is changed that already matches, so an unprivileged
// envd can still store files as itself.
func setOwnerAndMode(f *os.File, uid, gid int, mode fs.FileMode) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	sys := st.Sys().(*syscall.Stat_t)
	if int(sys.Uid) != uid || int(sys.Gid) != gid {
		if err := f.Chown(uid, gid); err != nil {
			return err
		}
	}
	if mode != 0 {
		return f.Chmod(mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky))
	}
	return nil
}

// syncDir makes the rename durable. Failure only loses durability, not data
// already visible, so it is not reported.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
