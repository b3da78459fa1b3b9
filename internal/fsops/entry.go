// Package fsops is the filesystem domain behind the Filesystem service and
// uploads: describing entries as §9.1 says, creating directories owned by the
// acting user, moving, removing, listing, and storing files atomically
// (Writer). It imports neither proto nor connect; errors are wrapped OS
// errors plus sentinels, which internal/fsapi and internal/httpapi map to
// wire codes and statuses.
package fsops

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/fsmeta"
)

// Type is an entry's kind after following symlinks.
type Type uint8

// The kinds the wire knows. Symlinks are reported as their target's kind.
const (
	TypeUnknown Type = iota
	TypeFile
	TypeDir
)

// Entry is everything EntryInfo carries about one path.
type Entry struct {
	Name        string
	Type        Type
	Path        string
	Size        int64
	Mode        uint32 // permission bits, of the target for symlinks
	Permissions string // fs.FileMode.String() of lstat
	Owner       string
	Group       string
	ModTime     time.Time
	// SymlinkTarget is set only for symlinks: the fully resolved path, or
	// the link's own path when it does not resolve.
	SymlinkTarget *string
	Metadata      map[string]string
}

// Describer builds Entries. It caches uid/gid names, so use one per request
// (a listing of 10,000 files owned by one user looks the name up once) and
// not across requests (users created later must show up). It is safe for
// concurrent use: List describes a directory's entries on several goroutines.
type Describer struct {
	mu     sync.Mutex
	users  map[uint32]string
	groups map[uint32]string
	perms  map[fs.FileMode]string // FileMode.String allocates; a listing has few distinct modes
	lookup func(uid, gid uint32) (string, string)
	// noXattrAt is set once listxattrat(2) proved unavailable.
	noXattrAt atomic.Bool
}

// NewDescriberNames returns a Describer that asks names for the user and
// group names it has not cached yet, e.g. a cache shared across requests.
// names must be safe for concurrent use.
func NewDescriberNames(names func(uid, gid uint32) (userName, groupName string)) *Describer {
	return &Describer{users: map[uint32]string{}, groups: map[uint32]string{}, perms: map[fs.FileMode]string{}, lookup: names}
}

// Describe builds the Entry of path from lstat(path), as §9.1 says.
func (d *Describer) Describe(path string) (Entry, error) {
	var st unix.Stat_t
	if err := ignoringEINTR(func() error { return unix.Lstat(path, &st) }); err != nil {
		return Entry{}, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	return d.fromStat(path, filepath.Base(path), &st, metaByPath)
}

// FromInfo builds the Entry of path from its lstat result.
func (d *Describer) FromInfo(path string, fi fs.FileInfo) (Entry, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Entry{}, fmt.Errorf("describe %s: no stat data", path)
	}
	u := unix.Stat_t{Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Size: st.Size, Mtim: unix.Timespec(st.Mtim)}
	return d.fromStat(path, filepath.Base(path), &u, metaByPath)
}

// Where fromStat gets metadata: metaNone skips it, metaByPath reads it by
// path, and a value >= 0 is an open directory holding the entry.
const (
	metaNone   = -2
	metaByPath = -1
)

// fromStat builds the Entry of path, whose last element is name, from its
// lstat result and, unless meta is metaNone, its user.e2b.* metadata.
func (d *Describer) fromStat(path, name string, st *unix.Stat_t, meta int) (Entry, error) {
	mode := fileMode(st.Mode)
	e := Entry{
		Name:        name,
		Path:        path,
		Size:        st.Size,
		Mode:        uint32(mode.Perm()),
		Permissions: d.permString(mode),
		ModTime:     time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Type:        typeOf(mode),
	}
	e.Owner, e.Group = d.names(st.Uid, st.Gid)
	brokenLink := false
	if mode&fs.ModeSymlink != 0 {
		e.Type, e.Mode = TypeUnknown, 0
		if target, err := os.Stat(path); err == nil {
			e.Type = typeOf(target.Mode())
			e.Mode = uint32(target.Mode().Perm())
		} else {
			brokenLink = true
		}
		resolved, err := filepath.EvalSymlinks(path)
		if err != nil {
			resolved = path
		} else if abs, err := filepath.Abs(resolved); err == nil {
			resolved = abs
		}
		e.SymlinkTarget = &resolved
	}
	if meta != metaNone && !brokenLink {
		md, err := d.metadata(meta, name, path)
		if err != nil {
			return Entry{}, fmt.Errorf("read metadata of %s: %w", path, err)
		}
		e.Metadata = md
	}
	return e, nil
}

// metadata reads path's user.e2b.* attributes. Given the open directory
// holding it, it first asks listxattrat(2) whether the entry has any
// attributes at all: most have none, and naming the entry relative to the
// directory spares the kernel resolving the whole path (about 40 % of a
// listxattr in a 10,000-entry listing). Any answer but "none" goes on to
// the path-based read, which also decides what errors mean.
func (d *Describer) metadata(dirfd int, name, path string) (map[string]string, error) {
	if dirfd >= 0 && !d.noXattrAt.Load() {
		n, err := fsmeta.ListSizeAt(dirfd, name)
		switch {
		case err == nil && n == 0:
			return nil, nil
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM):
			// Before Linux 6.13, or filtered: stop trying for this request.
			d.noXattrAt.Store(true)
		}
	}
	return fsmeta.Read(path)
}

// fileMode converts st_mode as os.Lstat does.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

func ignoringEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func (d *Describer) permString(m fs.FileMode) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.perms[m]
	if !ok {
		s = m.String()
		d.perms[m] = s
	}
	return s
}

func typeOf(m fs.FileMode) Type {
	switch {
	case m.IsRegular():
		return TypeFile
	case m.IsDir():
		return TypeDir
	}
	return TypeUnknown
}

// names returns the user and group names of uid and gid.
func (d *Describer) names(uid, gid uint32) (string, string) {
	d.mu.Lock()
	u, uok := d.users[uid]
	g, gok := d.groups[gid]
	d.mu.Unlock()
	if uok && gok {
		return u, g
	}
	u, g = d.lookup(uid, gid)
	d.mu.Lock()
	d.users[uid], d.groups[gid] = u, g
	d.mu.Unlock()
	return u, g
}

// vanishedErr reports errors meaning the entry went away between listing
// and describing it.
func vanishedErr(err error) bool {
	return errors.Is(err, fs.ErrNotExist)
}
