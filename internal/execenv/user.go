// Package execenv owns the defaults that /init sets and every process,
// filesystem RPC and upload reads: the default user, the default workdir and
// the default environment. It also resolves users and paths the way the wire
// contract (§6.2–6.3) describes. The Env value is passed explicitly to whoever
// needs it; there is no package state.
package execenv

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"
)

// User is a resolved account: everything needed to run a process as it or to
// give it ownership of a file.
type User struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups from the group database
	Home   string
	Shell  string
}

// ErrUnknownUser wraps every failed user lookup.
var ErrUnknownUser = errors.New("unknown user")

// LookupUser resolves a user name through the passwd and group databases.
func LookupUser(name string) (*User, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty name", ErrUnknownUser)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnknownUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid %q: %w", u.Gid, err)
	}
	out := &User{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir, Shell: shellOf(u.Username)}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("list groups of %s: %w", name, err)
	}
	for _, s := range ids {
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("parse gid %q: %w", s, err)
		}
		out.Groups = append(out.Groups, uint32(g))
	}
	if out.Home == "" {
		out.Home = "/"
	}
	return out, nil
}
