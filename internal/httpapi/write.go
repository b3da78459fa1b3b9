package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"syscall"

	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/fsmeta"
	"github.com/envd-dev/envd/internal/fsops"
)

// writer stores uploaded files atomically: the body goes to a temporary file
// beside the target, which replaces the target only after the whole body has
// arrived and reached the disk. Any failure removes the temporary file and
// leaves the old content as it was; concurrent uploads to one path each
// rename a complete file, so the last rename wins whole.
type writer struct {
	log           *slog.Logger
	user          *execenv.User
	metadata      map[string]string
	contentLength int64 // of the request, for the 507 message; -1 if unknown
}

// readError marks failures of the request body as opposed to the disk.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Unwrap() error { return e.err }

type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = readError{err}
	}
	return n, err
}

// write stores src at path. readContext prefixes body errors ("error reading
// form" for multipart parts).
func (wr *writer) write(path string, src io.Reader, readContext string) error {
	if err := fsops.MkdirAllOwned(filepath.Dir(path), wr.user.UID, wr.user.GID); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) && errors.Is(err, syscall.ENOTDIR) {
			return errorf(http.StatusInternalServerError, "error ensuring directories: path is a file: %s", pe.Path)
		}
		return errorf(http.StatusInternalServerError, "error ensuring directories: %w", err)
	}
	// Write through a symlink to what it points at, as an in-place write
	// would, instead of replacing the link with a file.
	real := path
	if lst, err := os.Lstat(path); err == nil && lst.Mode()&fs.ModeSymlink != 0 {
		if target, err := filepath.EvalSymlinks(path); err == nil {
			real = target
		}
	}
	uid, gid, mode := int(wr.user.UID), int(wr.user.GID), fs.FileMode(0)
	st, err := os.Stat(real)
	switch {
	case err == nil && st.IsDir():
		return errorf(http.StatusBadRequest, "path is a directory: %s", path)
	case err == nil && !st.Mode().IsRegular():
		// Replacing a device or FIFO with a file is never what an upload means.
		return errorf(http.StatusBadRequest, "path is not a regular file: %s", path)
	case err == nil:
		sys := st.Sys().(*syscall.Stat_t)
		uid, gid, mode = int(sys.Uid), int(sys.Gid), st.Mode()
	case !errors.Is(err, fs.ErrNotExist):
		return errorf(http.StatusInternalServerError, "error checking path %s: %w", path, err)
	}

	tmp, err := createTemp(real)
	if err != nil {
		if isNoSpace(err) {
			return errorf(http.StatusInsufficientStorage, "not enough inodes available: %w", err)
		}
		return errorf(http.StatusInternalServerError, "error opening file: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := setOwnerAndMode(tmp, uid, gid, mode); err != nil {
		return errorf(http.StatusInternalServerError, "error changing ownership of %s: %w", path, err)
	}

	size, err := pipeCopy(tmp, bodyReader{src})
	if err != nil {
		return wr.copyError(err, readContext)
	}
	if err := tmp.Sync(); err != nil {
		return wr.copyError(err, readContext)
	}
	if err := fsmeta.Replace(tmp.Name(), wr.metadata); err != nil {
		switch {
		case errors.Is(err, fsmeta.ErrUnsupported):
			if len(wr.metadata) > 0 {
				wr.log.Warn("file system has no user xattrs; metadata dropped", "path", path)
			}
		case isNoSpace(err):
			return errorf(http.StatusInsufficientStorage, "not enough disk space available for metadata: %w", err)
		default:
			return errorf(http.StatusInternalServerError, "error setting metadata: %w", err)
		}
	}
	if err := os.Rename(tmp.Name(), real); err != nil {
		if isNoSpace(err) {
			return errorf(http.StatusInsufficientStorage, "not enough disk space available: %w", err)
		}
		return errorf(http.StatusInternalServerError, "error writing file: %w", err)
	}
	done = true
	// Watchers (and the SDKs' tests) expect a write to show up as WRITE on
	// the file's own name, but the data went in under the temporary name and
	// the rename is only a CREATE. Truncating our inode to its own size
	// changes nothing yet raises IN_MODIFY under the new name. It goes
	// through our fd, so if a concurrent upload has already replaced the
	// name, it touches only our now-unlinked file.
	_ = tmp.Truncate(size)
	if err := tmp.Close(); err != nil {
		wr.log.Warn("close uploaded file", "path", path, "err", err)
	}
	syncDir(filepath.Dir(real))
	return nil
}

func (wr *writer) copyError(err error, readContext string) error {
	var re readError
	switch {
	case errors.As(err, &re):
		if isGzipError(re.err) {
			return errorf(http.StatusBadRequest, "error decompressing request body: %w", re.err)
		}
		return errorf(http.StatusBadRequest, "%s: %w", readContext, re.err)
	case isNoSpace(err):
		if wr.contentLength > 0 {
			return errorf(http.StatusInsufficientStorage, "attempted to write %d bytes: not enough disk space available", wr.contentLength)
		}
		return errorf(http.StatusInsufficientStorage, "not enough disk space available")
	}
	return errorf(http.StatusInternalServerError, "error writing file: %w", err)
}

func isGzipError(err error) bool {
	var corrupt flate.CorruptInputError
	return errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.As(err, &corrupt)
}

// createTemp makes a hidden file next to target. Opening with 0666 lets the
// kernel apply the umask, so a new upload gets the usual 0644.
func createTemp(target string) (*os.File, error) {
	dir, base := filepath.Split(target)
	if len(base) > 200 {
		base = base[:200] // leave room for the suffix within NAME_MAX
	}
	for range 10 {
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		name := filepath.Join(dir, "."+base+".envd-upload-"+hex.EncodeToString(rnd[:]))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, errors.New("create temporary file: too many name collisions")
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
// already visible, so it is not reported to the client.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
