package execenv

import (
	"os"
	"sync"
	"syscall"
)

// Users caches LookupUser results. Every RPC and upload resolves its acting
// user, and parsing the passwd and group databases costs more than a Stat; the
// cache is dropped whenever either file changes (useradd replaces them), which
// two stat calls detect.
type Users struct {
	PasswdPath, GroupPath string // default /etc/passwd and /etc/group

	mu     sync.Mutex
	stamp  [2]fileStamp
	byName map[string]*User
}

type fileStamp struct {
	ino, size int64
	mtime     syscall.Timespec
}

// Lookup returns the cached user or resolves it. The returned User is shared:
// callers must not modify it.
func (c *Users) Lookup(name string) (*User, error) {
	stamp := [2]fileStamp{statStamp(or(c.PasswdPath, "/etc/passwd")), statStamp(or(c.GroupPath, "/etc/group"))}
	c.mu.Lock()
	if c.stamp != stamp || c.byName == nil {
		c.stamp, c.byName = stamp, map[string]*User{}
	}
	u, ok := c.byName[name]
	c.mu.Unlock()
	if ok {
		return u, nil
	}
	u, err := LookupUser(name)
	if err != nil {
		return nil, err // unknown users are not cached: they may be created next
	}
	c.mu.Lock()
	if c.stamp == stamp {
		c.byName[name] = u
	}
	c.mu.Unlock()
	return u, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// statStamp identifies a file's version; a missing file has the zero stamp.
func statStamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStamp{size: fi.Size()}
	}
	return fileStamp{ino: int64(st.Ino), size: st.Size, mtime: st.Mtim}
}
