package fsops

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode/utf8"
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
	if fi, err := os.Stat(path); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("directory already exists: %s: %w", path, ErrExists)
		}
		return fmt.Errorf("path already exists but it is not a directory: %s: %w", path, ErrNotDir)
	}
	created, err := mkdirAll(path, uid, gid)
	if err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	if !created {
		return fmt.Errorf("directory already exists: %s: %w", path, ErrExists)
	}
	return nil
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
func Remove(path string) error {
	if filepath.Clean(path) == "/" {
		return ErrRemoveRoot
	}
	if _, err := os.Lstat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove: %w", err)
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
	err = filepath.WalkDir(resolved, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if vanishedErr(err) && p != resolved {
				return nil
			}
			return err
		}
		if p == resolved {
			return nil
		}
		rel, err := filepath.Rel(resolved, p)
		if err != nil {
			return err
		}
		level := strings.Count(rel, string(filepath.Separator)) + 1
		info, err := de.Info()
		if err != nil {
			if vanishedErr(err) {
				return nil
			}
			return err
		}
		e, err := d.FromInfo(p, info)
		if err != nil {
			if vanishedErr(err) {
				return nil
			}
			return err
		}
		e.Path = filepath.Join(path, rel)
		out = append(out, e)
		if de.IsDir() && level >= depth {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk %s: %w", path, err)
	}
	return out, nil
}
