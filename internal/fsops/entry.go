// Package fsops is the filesystem domain behind the Filesystem service and
// uploads: describing entries as §9.1 says, creating directories owned by the
// acting user, moving, removing and listing. It imports neither proto nor
// connect; errors are wrapped OS errors plus the sentinels below, which
// internal/fsapi maps to wire codes.
package fsops

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

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
// not across requests (users created later must show up).
type Describer struct {
	users  map[uint32]string
	groups map[uint32]string
}

// NewDescriber returns a Describer with empty caches.
func NewDescriber() *Describer {
	return &Describer{users: map[uint32]string{}, groups: map[uint32]string{}}
}

// Describe builds the Entry of path from lstat(path), as §9.1 says.
func (d *Describer) Describe(path string) (Entry, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return Entry{}, err
	}
	return d.FromInfo(path, fi)
}

// FromInfo builds the Entry of path from its lstat result.
func (d *Describer) FromInfo(path string, fi fs.FileInfo) (Entry, error) {
	e := Entry{
		Name:        filepath.Base(path),
		Path:        path,
		Size:        fi.Size(),
		Mode:        uint32(fi.Mode().Perm()),
		Permissions: fi.Mode().String(),
		ModTime:     fi.ModTime(),
		Type:        typeOf(fi.Mode()),
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Owner = d.userName(st.Uid)
		e.Group = d.groupName(st.Gid)
	}
	brokenLink := false
	if fi.Mode()&fs.ModeSymlink != 0 {
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
	if !brokenLink {
		md, err := fsmeta.Read(path)
		if err != nil {
			return Entry{}, fmt.Errorf("read metadata of %s: %w", path, err)
		}
		e.Metadata = md
	}
	return e, nil
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

func (d *Describer) userName(uid uint32) string {
	if n, ok := d.users[uid]; ok {
		return n
	}
	n := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(n); err == nil {
		n = u.Username
	}
	d.users[uid] = n
	return n
}

func (d *Describer) groupName(gid uint32) string {
	if n, ok := d.groups[gid]; ok {
		return n
	}
	n := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(n); err == nil {
		n = g.Name
	}
	d.groups[gid] = n
	return n
}

// vanishedErr reports errors meaning the entry went away between listing
// and describing it.
func vanishedErr(err error) bool {
	return errors.Is(err, fs.ErrNotExist)
}
