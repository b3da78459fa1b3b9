// Package proc supervises the processes clients start: it forks them with
// pipes or a pty, fans their output out to every attached stream without
// losing bytes, forwards input and signals, and keeps each exit result for a
// while so a client that reconnects late still learns how the process ended.
// It knows nothing of the wire protocol; processapi translates.
package proc

import (
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envd-dev/envd/internal/cgroup"
	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/reaper"
)

// DefaultRetention is how long an exited process stays visible to Connect (§8.2).
const DefaultRetention = 30 * time.Second

// Placer gives each new process a cgroup of its own (under the group for
// terminals or the one for other processes), which measures it for its exit
// report; nil, nil leaves the child in envd's own cgroup.
type Placer interface {
	Command(pty bool) (*cgroup.Command, error)
}

// Options configure a Manager. Reaper and Env are required.
type Options struct {
	Reaper *reaper.Reaper
	Env    *execenv.Env
	Placer Placer // nil: no cgroup placement
	// OnFork, if set, runs right after each fork, before the process is
	// registered or announced: the place for per-pid setup such as
	// oom_score_adj, which children otherwise inherit from envd.
	OnFork    func(pid int)
	Log       *slog.Logger
	Retention time.Duration    // 0: DefaultRetention
	Now       func() time.Time // nil: time.Now; tests move time forward without sleeping
	// Shell runs scripts without #! and answers for commands that cannot be
	// exec'd; "" is /bin/sh.
	Shell string
	// LogLimit bounds the output kept per process (0: DefaultLogLimit;
	// negative: keep no output log); LogTotal bounds all logs together
	// (0: DefaultLogTotal).
	LogLimit int64
	LogTotal int64
}

// Manager is the table of processes, live and recently exited, by pid.
type Manager struct {
	reaper    *reaper.Reaper
	env       *execenv.Env
	placer    Placer
	onFork    func(pid int)
	log       *slog.Logger
	retention time.Duration
	now       func() time.Time
	shell     string
	logLimit  int64
	logTotal  int64
	logBytes  atomic.Int64

	chunks sync.Pool // of *chunkBuf, shared by all processes' output readers

	mu      sync.Mutex
	procs   map[int]*Process
	retired []*Process // exited processes in exit order, oldest first
	seq     uint64
}

// NewManager builds an empty table.
func NewManager(o Options) *Manager {
	m := &Manager{
		reaper:    o.Reaper,
		env:       o.Env,
		placer:    o.Placer,
		onFork:    o.OnFork,
		log:       o.Log,
		retention: o.Retention,
		now:       o.Now,
		shell:     o.Shell,
		logLimit:  o.LogLimit,
		logTotal:  o.LogTotal,
		procs:     map[int]*Process{},
	}
	m.chunks.New = func() any { return &chunkBuf{b: make([]byte, chunkSize), pool: &m.chunks} }
	if m.retention == 0 {
		m.retention = DefaultRetention
	}
	if m.logLimit == 0 {
		m.logLimit = DefaultLogLimit
	}
	if m.logTotal == 0 {
		m.logTotal = DefaultLogTotal
	}
	if m.shell == "" {
		m.shell = "/bin/sh"
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m
}

// Selector picks a process by pid, or by tag when ByTag is set.
type Selector struct {
	Pid   int
	Tag   string
	ByTag bool
}

// Get returns a running process.
func (m *Manager) Get(sel Selector) (*Process, error) {
	return m.find(sel, false)
}

// GetRetained returns a running process or one that exited within the
// retention period.
func (m *Manager) GetRetained(sel Selector) (*Process, error) {
	return m.find(sel, true)
}

func (m *Manager) find(sel Selector, retained bool) (*Process, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked()
	ok := func(p *Process) bool { return p != nil && (retained || p.exitedAt.IsZero()) }
	if !sel.ByTag {
		if p := m.procs[sel.Pid]; ok(p) {
			return p, nil
		}
		return nil, errorf(ErrNotFound, "process with pid %d not found", sel.Pid)
	}
	var best *Process
	for _, p := range m.procs {
		if !ok(p) || !p.hasTag || p.tag != sel.Tag {
			continue
		}
		// A running process beats an exited one; among equals the most
		// recently started wins.
		if best == nil || better(p, best) {
			best = p
		}
	}
	if best == nil {
		return nil, errorf(ErrNotFound, "process with tag %s not found", sel.Tag)
	}
	return best, nil
}

func better(p, q *Process) bool {
	pl, ql := p.exitedAt.IsZero(), q.exitedAt.IsZero()
	if pl != ql {
		return pl
	}
	return p.seq > q.seq
}

// Info describes a running process for List.
type Info struct {
	Pid    int
	Tag    string
	HasTag bool
	Config Config
}

// List returns the running processes in start order.
func (m *Manager) List() []Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked()
	live := make([]*Process, 0, len(m.procs))
	for _, p := range m.procs {
		if p.exitedAt.IsZero() {
			live = append(live, p)
		}
	}
	slices.SortFunc(live, func(a, b *Process) int { return int(a.seq - b.seq) })
	out := make([]Info, len(live))
	for i, p := range live {
		out[i] = Info{Pid: p.pid, Tag: p.tag, HasTag: p.hasTag, Config: p.config}
	}
	return out
}

// Live returns the running processes, for shutdown.
func (m *Manager) Live() []*Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Process
	for _, p := range m.procs {
		if p.exitedAt.IsZero() {
			out = append(out, p)
		}
	}
	return out
}

// register adds a freshly forked process, evicting retained exits that
// would shadow it: the same pid (reused) or the same tag.
func (m *Manager) register(p *Process) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked()
	m.seq++
	p.seq = m.seq
	if p.hasTag {
		for pid, q := range m.procs {
			if !q.exitedAt.IsZero() && q.hasTag && q.tag == p.tag {
				delete(m.procs, pid)
			}
		}
	}
	m.procs[p.pid] = p
}

// retire marks p exited; it stays visible to GetRetained for the retention period.
func (m *Manager) retire(p *Process) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p.exitedAt = m.now()
	m.retired = append(m.retired, p)
	m.pruneLocked()
}

func (m *Manager) pruneLocked() {
	now := m.now()
	n := 0
	for _, p := range m.retired {
		if now.Sub(p.exitedAt) < m.retention {
			break
		}
		if m.procs[p.pid] == p {
			delete(m.procs, p.pid)
		}
		if p.log != nil {
			p.log.free()
		}
		n++
	}
	if n > 0 {
		m.retired = slices.Delete(m.retired, 0, n)
	}
}
