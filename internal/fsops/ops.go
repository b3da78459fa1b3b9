package fsops

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

var (
	// ErrInvalidPath marks a path the kernel would reject or misread: empty,
	// NUL bytes, invalid UTF-8, a name over 255 bytes, or over PATH_MAX.
	ErrInvalidPath = errors.New("invalid path")
	// ErrExists is returned by MakeDir for an existing directory.
	ErrExists = errors.New("already exists")
	// ErrNotDir marks a path that must be a directory and is not.
	ErrNotDir = errors.New("not a directory")
	// ErrRemoveRoot refuses removing "/", which would destroy the sandbox.
	ErrRemoveRoot = errors.New("refusing to remove /")
)

const (
	nameMax = 255  // NAME_MAX: bytes in one path component
	pathMax = 4095 // PATH_MAX without the terminating NUL
)

// ValidatePath rejects paths no syscall should see. The wire carries
// strings; checking here turns what would be EINVAL or ENAMETOOLONG deep in
// an operation into one clear error.
func ValidatePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty", ErrInvalidPath)
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("%w: contains a NUL byte", ErrInvalidPath)
	case !utf8.ValidString(p):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidPath)
	case len(p) > pathMax:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidPath, pathMax)
	}
	for _, name := range strings.Split(p, "/") {
		if len(name) > nameMax {
			return fmt.Errorf("%w: name longer than %d bytes: %.40s…", ErrInvalidPath, nameMax, name)
		}
	}
	return nil
}

// MkdirAllOwned creates path and every missing parent with mode 0755 (before
// umask), each new one owned by uid:gid. An existing directory is fine.
// Uploads call it for the parents of the target file.
func MkdirAllOwned(path string, uid, gid uint32) error {
	_, err := mkdirAll(path, uid, gid)
	return err
}

// mkdirAll reports whether it created path itself.
func mkdirAll(path string, uid, gid uint32) (bool, error) {
	fi, err := os.Stat(path)
	if err == nil {
		if !fi.IsDir() {
			return false, &fs.PathError{Op: "mkdir", Path: path, Err: syscall.ENOTDIR}
		}
		return false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	parent := filepath.Dir(filepath.Clean(path))
	if parent != path {
		if _, err := mkdirAll(parent, uid, gid); err != nil {
			return false, err
		}
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Created concurrently: fine if it is a directory, not ours to chown.
			if fi, serr := os.Stat(path); serr == nil && fi.IsDir() {
				return false, nil
			}
			return false, &fs.PathError{Op: "mkdir", Path: path, Err: syscall.ENOTDIR}
		}
		return false, err
	}
	if err := os.Lchown(path, int(uid), int(gid)); err != nil {
		return true, fmt.Errorf("chown new directory: %w", err)
	}
	return true, nil
}

// MakeDir creates path and its missing parents owned by uid:gid (§9.2).
// An existing directory is ErrExists; an existing non-directory ErrNotDir.
func MakeDir(path string, uid, gid uint32) error {
	_, err := makeDir(path, uid, gid)
	return err
}

// MakeDir is the package's MakeDir returning the new directory's Entry.
func (d *Describer) MakeDir(path string, uid, gid uint32) (Entry, error) {
	st, err := makeDir(path, uid, gid)
	if err != nil {
		return Entry{}, err
	}
	// No user.e2b.* attributes to read: a directory made this instant has
	// none (user xattrs are not inherited).
	return d.fromStat(path, filepath.Base(path), &st, metaNone)
}

// makeDir tries mkdir first, the common case being a missing directory under
// an existing parent; parents and the exists/not-a-directory distinction are
// only looked at when mkdir says so. It returns the new directory's lstat,
// which also tells whether the chown is needed at all.
func makeDir(path string, uid, gid uint32) (unix.Stat_t, error) {
	var st unix.Stat_t
	mkdir := func() error { return ignoringEINTR(func() error { return unix.Mkdir(path, 0o755) }) }
	err := mkdir()
	if errors.Is(err, unix.ENOENT) {
		if err := MkdirAllOwned(filepath.Dir(filepath.Clean(path)), uid, gid); err != nil {
			return st, fmt.Errorf("create directory: %w", err)
		}
		err = mkdir()
	}
	if errors.Is(err, unix.EEXIST) {
		fi, serr := os.Stat(path)
		switch {
		case serr == nil && fi.IsDir():
			return st, fmt.Errorf("directory already exists: %s: %w", path, ErrExists)
		case serr == nil:
			return st, fmt.Errorf("path already exists but it is not a directory: %s: %w", path, ErrNotDir)
		}
		err = unix.ENOTDIR // a dangling symlink
	}
	if err != nil {
		return st, fmt.Errorf("create directory: %w", &fs.PathError{Op: "mkdir", Path: path, Err: err})
	}
	if err := ignoringEINTR(func() error { return unix.Lstat(path, &st) }); err != nil {
		return st, fmt.Errorf("create directory: %w", &fs.PathError{Op: "lstat", Path: path, Err: err})
	}
	// The acting user is often envd's own (root): then mkdir already gave
	// the right owner, unless a setgid parent chose the group.
	if st.Uid != uid || st.Gid != gid {
		if err := os.Lchown(path, int(uid), int(gid)); err != nil {
			return st, fmt.Errorf("create directory: chown new directory: %w", err)
		}
		st.Uid, st.Gid = uid, gid
	}
	return st, nil
}

// Move renames src to dst, first creating dst's missing parents owned by
// uid:gid. rename(2) replaces an existing file and keeps xattrs; it does not
// cross filesystems (EXDEV).
func Move(src, dst string, uid, gid uint32) error {
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if err := MkdirAllOwned(filepath.Dir(filepath.Clean(dst)), uid, gid); err != nil {
		return fmt.Errorf("create destination parents: %w", err)
	}
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("move: %w", err)
	}
	return nil
}

// Remove deletes path recursively. A missing path is success; a path whose
// parent is not a directory is not "missing" but an error (ENOTDIR).
// rmdir, then unlink, are tried before the full RemoveAll: one syscall for
// an empty directory, two for a file.
func Remove(path string) error {
	if filepath.Clean(path) == "/" {
		return ErrRemoveRoot
	}
	err := ignoringEINTR(func() error { return unix.Rmdir(path) })
	if errors.Is(err, unix.ENOTDIR) {
		err = ignoringEINTR(func() error { return unix.Unlink(path) })
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove: %w", &fs.PathError{Op: "unlink", Path: path, Err: err})
		}
	}
	switch {
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return nil
}

// List walks the directory at path to depth levels (children are depth 1)
// in lexical depth-first pre-order, without entering symlinked directories.
// Each Entry's Path is path joined with the entry's relative path, so the
// caller sees the names it asked for even when path goes through symlinks.
// Entries that vanish during the walk are skipped.
func List(d *Describer, path string, depth int) ([]Entry, error) {
	if depth < 1 {
		depth = 1
	}
	// stat first: the kernel names a symlink loop ELOOP, while EvalSymlinks
	// only says "too many links".
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("resolve: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("path is not a directory: %s: %w", path, ErrNotDir)
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("resolve: %w", err)
	}
	var out []Entry
	if err := d.walk(&out, resolved, path, 1, depth); err != nil {
		return nil, fmt.Errorf("walk %s: %w", path, err)
	}
	return out, nil
}

// walk appends the entries of the directory dir (its real path; wire is the
// path the caller named it by) in lexical order, each followed by its own
// entries while level < depth. Describing an entry costs an lstat and a
// listxattr, so a directory's entries are described on GOMAXPROCS
// goroutines; the order stays that of the sorted names.
func (d *Describer) walk(out *[]Entry, dir, wire string, level, depth int) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return err
	}
	slices.Sort(names)
	// fstatat on the open directory spares the kernel resolving dir again
	// for every entry.
	dfd := int(f.Fd())
	entries := make([]Entry, len(names))
	errs := make([]error, len(names))
	describe := func(i int) {
		name := names[i]
		var st unix.Stat_t
		err := ignoringEINTR(func() error { return unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) })
		if err != nil {
			errs[i] = &fs.PathError{Op: "lstat", Path: dir + "/" + name, Err: err}
			return
		}
		entries[i], errs[i] = d.fromStat(join(dir, name), name, &st, dfd)
	}
	parallel(len(names), describe)
	if *out == nil {
		*out = make([]Entry, 0, len(names))
	}
	for i := range entries {
		if err := errs[i]; err != nil {
			if vanishedErr(err) {
				continue
			}
			return err
		}
		e := entries[i]
		real := e.Path
		e.Path = join(wire, e.Name)
		*out = append(*out, e)
		if e.Type == TypeDir && e.SymlinkTarget == nil && level < depth {
			if err := d.walk(out, real, e.Path, level+1, depth); err != nil && !(vanishedErr(err)) {
				return err
			}
		}
	}
	return nil
}

func join(dir, name string) string {
	if strings.HasSuffix(dir, "/") {
		return dir + name
	}
	return dir + "/" + name
}

// minPerWorker keeps small directories on one goroutine, where starting
// workers would cost more than it saves.
const minPerWorker = 64

// parallel calls f(0..n-1) on up to GOMAXPROCS goroutines.
func parallel(n int, f func(int)) {
	workers := min(runtime.GOMAXPROCS(0), n/minPerWorker)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	const chunk = 32
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				start := int(next.Add(chunk)) - chunk
				if start >= n {
					return
				}
				for i := start; i < min(start+chunk, n); i++ {
					f(i)
				}
			}
		})
	}
	wg.Wait()
}
