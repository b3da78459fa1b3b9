// Package cgroup places the processes envd starts into cgroup v2 groups under
// an injected root: "ptys" for terminals, "user" for every other process and
// "envd" for envd itself, whose port forwarding runs in-process (it replaces
// the "socats" group of the Go envd, which held one socat per port). The proc
// package gets directory fds for CLONE_INTO_CGROUP through CgroupFD. When the
// root is not a cgroup2 filesystem the Manager is disabled after one warning,
// so starting a process never fails because of cgroups. Used by daemon.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Group names a cgroup under the root.
type Group string

const (
	PTY  Group = "ptys"
	User Group = "user"
	Envd Group = "envd"
)

// Groups lists every group the Manager creates.
func Groups() []Group { return []Group{PTY, User, Envd} }

// Manager owns the groups and an open directory fd for each.
type Manager struct {
	root string
	log  *slog.Logger

	mu        sync.Mutex
	fds       map[Group]int  // nil when disabled or closed
	delegated map[Group]bool // groups whose controllers were delegated to command groups

	seq atomic.Uint64 // names command groups
}

// Open creates the groups under root and applies the §12 limits for the
// controllers root offers. It never fails: on any problem it logs one warning
// and returns a disabled Manager, whose CgroupFD leaves children in envd's
// own cgroup.
func Open(root string, meminfo []byte, log *slog.Logger) *Manager {
	m := &Manager{root: root, log: log}
	if err := m.open(meminfo); err != nil {
		log.Warn("running without cgroups", "root", root, "err", err)
		m.closeFDs()
	}
	return m
}

// Disabled returns a Manager that places nothing, for --no-cgroups.
func Disabled() *Manager { return &Manager{log: slog.New(slog.DiscardHandler)} }

func (m *Manager) open(meminfo []byte) error {
	if err := IsCgroup2(m.root); err != nil {
		return err
	}
	ctrls, err := Controllers(m.root)
	if err != nil {
		return err
	}
	// Ask for the controllers whose knobs we set. Failure is not fatal: the
	// groups still isolate and count processes without them.
	var enable []string
	for _, c := range []string{"cpu", "memory"} {
		if slices.Contains(ctrls, c) {
			enable = append(enable, "+"+c)
		}
	}
	if len(enable) > 0 {
		if err := os.WriteFile(filepath.Join(m.root, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0); err != nil {
			m.log.Warn("enable cgroup controllers", "root", m.root, "controllers", enable, "err", err)
		}
	}
	m.fds = map[Group]int{}
	for _, g := range Groups() {
		dir := m.Path(g)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create cgroup: %w", err)
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open cgroup: %w", err)
		}
		m.fds[g] = fd
	}
	for _, l := range limits(meminfo) {
		p := filepath.Join(m.Path(l.group), l.file)
		if _, err := os.Stat(p); err != nil {
			continue // controller not enabled here
		}
		if err := os.WriteFile(p, []byte(l.value), 0); err != nil {
			m.log.Warn("set cgroup limit", "file", p, "value", l.value, "err", err)
		}
	}
	return nil
}

// Enabled reports whether processes are placed into groups.
func (m *Manager) Enabled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fds != nil
}

// Path is the directory of group g.
func (m *Manager) Path(g Group) string { return filepath.Join(m.root, string(g)) }

// CgroupFD implements proc.Placer: the fd stays owned by the Manager.
func (m *Manager) CgroupFD(pty bool) (int, bool) {
	g := User
	if pty {
		g = PTY
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	fd, ok := m.fds[g]
	return fd, ok
}

// Join moves pid (0: the caller's process) into g.
func (m *Manager) Join(g Group, pid int) error {
	if !m.Enabled() {
		return nil
	}
	if pid == 0 {
		pid = os.Getpid()
	}
	if err := os.WriteFile(filepath.Join(m.Path(g), "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("join cgroup %s: %w", g, err)
	}
	return nil
}

// Procs lists the pids in g, from cgroup.procs.
func (m *Manager) Procs(g Group) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(m.Path(g), "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("read cgroup.procs: %w", err)
	}
	var out []int
	for f := range strings.FieldsSeq(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse cgroup.procs: %w", err)
		}
		out = append(out, pid)
	}
	return out, nil
}

// OOMKills is the oom_kill count of g's memory.events, so the process layer
// can tell an OOM kill from any other SIGKILL.
func (m *Manager) OOMKills(g Group) (int, error) {
	b, err := os.ReadFile(filepath.Join(m.Path(g), "memory.events"))
	if err != nil {
		return 0, fmt.Errorf("read memory.events: %w", err)
	}
	return ParseKeyed(b, "oom_kill")
}

// SetMemoryMax sets a hard memory limit on g (memory.max).
func (m *Manager) SetMemoryMax(g Group, bytes int64) error {
	if err := os.WriteFile(filepath.Join(m.Path(g), "memory.max"), []byte(strconv.FormatInt(bytes, 10)), 0); err != nil {
		return fmt.Errorf("set memory.max: %w", err)
	}
	return nil
}

// Close releases the fds; the groups stay, since children may still be in them.
func (m *Manager) Close() error {
	m.closeFDs()
	return nil
}

func (m *Manager) closeFDs() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, fd := range m.fds {
		unix.Close(fd)
	}
	m.fds = nil
}

// IsCgroup2 fails unless dir is on a cgroup2 filesystem.
func IsCgroup2(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs cgroup root: %w", err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("%s is not a cgroup2 filesystem (magic %#x)", dir, st.Type)
	}
	return nil
}

// Controllers lists the controllers available in dir (cgroup.controllers).
func Controllers(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("read cgroup.controllers: %w", err)
	}
	return strings.Fields(string(b)), nil
}

// ParseKeyed reads the value of key from "key value" lines, the format of
// memory.events, cpu.stat and /proc/meminfo ("MemTotal:  123 kB").
func ParseKeyed(text []byte, key string) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && strings.TrimSuffix(f[0], ":") == key {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				return 0, fmt.Errorf("parse %s: %w", key, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no %s in %q", key, text)
}

type limit struct {
	group Group
	file  string
	value string
}

// limits are §12's: terminals get more CPU than background processes; user
// processes are throttled (memory.high) before the whole VM runs out, leaving
// room for envd; envd keeps a small protected reserve. meminfo is
// /proc/meminfo; without MemTotal the memory.high limit is skipped.
func limits(meminfo []byte) []limit {
	const mib = 1 << 20
	ls := []limit{
		{PTY, "cpu.weight", "200"},
		{User, "cpu.weight", "50"},
		{Envd, "cpu.weight", "150"},
		{Envd, "memory.min", strconv.Itoa(5 * mib)},
		{Envd, "memory.low", strconv.Itoa(8 * mib)},
	}
	if kb, err := ParseKeyed(meminfo, "MemTotal"); err == nil && kb > 0 {
		total := int64(kb) * 1024
		ls = append(ls, limit{User, "memory.high", strconv.FormatInt(total-min(total/8, 128*mib), 10)})
	}
	return ls
}

// V1Controllers lists the controllers mounted as cgroup v1 hierarchies in
// mounts (the text of /proc/self/mounts). A controller bound to v1 cannot
// be enabled in cgroup2, which explains a missing memory or cpu controller.
func V1Controllers(mounts []byte) []string {
	var out []string
	for line := range strings.Lines(string(mounts)) {
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != "cgroup" {
			continue
		}
		for opt := range strings.SplitSeq(f[3], ",") {
			switch opt {
			case "rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "xattr", "clone_children":
			default:
				if !strings.Contains(opt, "=") && !slices.Contains(out, opt) {
					out = append(out, opt)
				}
			}
		}
	}
	return out
}
