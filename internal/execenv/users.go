package execenv

import (
	"os"
	"os/user"
	"strconv"
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
	// uidNames and gidNames serve Names, dropped with byName.
	uidNames, gidNames map[uint32]string
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
	c.refresh(stamp)
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

// refresh drops every cached answer when the databases changed; c.mu held.
func (c *Users) refresh(stamp [2]fileStamp) {
	if c.stamp != stamp || c.byName == nil {
		c.stamp, c.byName = stamp, map[string]*User{}
		c.uidNames, c.gidNames = map[uint32]string{}, map[uint32]string{}
	}
}

// Names returns the user name of uid and the group name of gid, or their
// decimal forms when the databases have none. Every Stat and MakeDir answer
// carries both, and reading the databases for them costs ~10 µs.
func (c *Users) Names(uid, gid uint32) (userName, groupName string) {
	stamp := [2]fileStamp{statStamp(or(c.PasswdPath, "/etc/passwd")), statStamp(or(c.GroupPath, "/etc/group"))}
	c.mu.Lock()
	c.refresh(stamp)
	un, uok := c.uidNames[uid]
	gn, gok := c.gidNames[gid]
	c.mu.Unlock()
	if !uok {
		un = strconv.FormatUint(uint64(uid), 10)
		if u, err := user.LookupId(un); err == nil {
			un = u.Username
		}
	}
	if !gok {
		gn = strconv.FormatUint(uint64(gid), 10)
		if g, err := user.LookupGroupId(gn); err == nil {
			gn = g.Name
		}
	}
	if !uok || !gok {
		c.mu.Lock()
		if c.stamp == stamp {
			c.uidNames[uid], c.gidNames[gid] = un, gn
		}
		c.mu.Unlock()
	}
	return un, gn
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
