package execenv

import (
	"maps"
	"sort"
	"sync"
)

// Defaults is a consistent copy of what /init last set.
type Defaults struct {
	User    string
	Workdir string
	// Vars is the default environment merged into every process (§8.5 step 3):
	// internal keys first, then /init envVars. Callers own the returned map.
	Vars map[string]string
}

// Env is the live set of defaults. Reads take a snapshot; /init writes
// through the setters. One lock guards it, so a process started right after
// /init answers sees every field /init applied.
type Env struct {
	mu       sync.RWMutex
	path     string
	user     string
	workdir  string
	internal map[string]string // WRENN_SANDBOX etc.; /init cannot change or delete them
	userVars map[string]string // the last /init envVars

	users Users
}

// LookupUser resolves a user through the cache every request shares.
func (e *Env) LookupUser(name string) (*User, error) { return e.users.Lookup(name) }

// Names returns the names of uid and gid through the same cache.
func (e *Env) Names(uid, gid uint32) (userName, groupName string) { return e.users.Names(uid, gid) }

// NewEnv starts with default user root, no workdir and the given PATH, which
// every process inherits (envd's own PATH, §8.5 step 1).
func NewEnv(path string) *Env {
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	return &Env{path: path, user: "root", internal: map[string]string{}, userVars: map[string]string{}}
}

// Snapshot returns the current defaults.
func (e *Env) Snapshot() Defaults {
	e.mu.RLock()
	defer e.mu.RUnlock()
	vars := make(map[string]string, len(e.internal)+len(e.userVars))
	maps.Copy(vars, e.userVars)
	maps.Copy(vars, e.internal)
	return Defaults{User: e.user, Workdir: e.workdir, Vars: vars}
}

// SetDefaultUser ignores an empty name: /init only replaces with non-empty values.
func (e *Env) SetDefaultUser(name string) {
	if name == "" {
		return
	}
	e.mu.Lock()
	e.user = name
	e.mu.Unlock()
}

// SetDefaultWorkdir ignores an empty path, as /init does.
func (e *Env) SetDefaultWorkdir(dir string) {
	if dir == "" {
		return
	}
	e.mu.Lock()
	e.workdir = dir
	e.mu.Unlock()
}

// SetInternal sets a protected variable (sandbox id, template id, ...).
func (e *Env) SetInternal(key, value string) {
	e.mu.Lock()
	e.internal[key] = value
	e.mu.Unlock()
}

// SetInternals sets several internal variables at once: no reader sees some
// of them without the others.
func (e *Env) SetInternals(vars map[string]string) {
	e.mu.Lock()
	for k, v := range vars {
		e.internal[k] = v
	}
	e.mu.Unlock()
}

// ReplaceVars replaces the user-set variables as a whole: keys absent from
// vars are dropped. Internal keys are skipped, so they can be neither
// overwritten nor deleted.
func (e *Env) ReplaceVars(vars map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.userVars = make(map[string]string, len(vars))
	for k, v := range vars {
		if _, internal := e.internal[k]; !internal {
			e.userVars[k] = v
		}
	}
}

// ProcessEnv builds a process environment in §8.5 order — PATH, the user's
// HOME/USER/LOGNAME/SHELL, the defaults, then the request's own vars — with
// later keys winning, as KEY=VALUE strings sorted for stable output.
func (e *Env) ProcessEnv(u *User, request map[string]string) []string {
	d := e.Snapshot()
	m := map[string]string{
		"PATH":    e.path,
		"HOME":    u.Home,
		"USER":    u.Name,
		"LOGNAME": u.Name,
		"SHELL":   u.Shell,
	}
	maps.Copy(m, d.Vars)
	maps.Copy(m, request)
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
