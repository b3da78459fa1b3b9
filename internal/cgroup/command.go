package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// escaped is the leaf under ptys and user that receives what is still alive
// in a command's group when the command ended (a daemon it left behind), so
// the command's own group can be removed.
const escaped = "escaped"

// Command is one command's own group, a child of ptys or user, so the kernel
// measures that command alone: peak memory, OOM kills, CPU time.
type Command struct {
	dir    string
	parent string
	fd     int
}

// Usage is what a command's group measured. A field whose Has flag is false
// could not be read: its controller is missing (or the kernel too old).
type Usage struct {
	PeakMemory    uint64
	HasPeakMemory bool
	OOMKills      int
	HasOOMKills   bool
	CPUUserUsec   uint64
	CPUSystemUsec uint64
	HasCPU        bool
}

// Command creates a fresh group for one command under ptys or user and opens
// it for CLONE_INTO_CGROUP. It returns nil, nil on a disabled Manager.
func (m *Manager) Command(pty bool) (*Command, error) {
	g := User
	if pty {
		g = PTY
	}
	m.mu.Lock()
	enabled := m.fds != nil
	first := !m.delegated[g]
	if enabled && first {
		if m.delegated == nil {
			m.delegated = map[Group]bool{}
		}
		m.delegated[g] = true
	}
	m.mu.Unlock()
	if !enabled {
		return nil, nil
	}
	parent := m.Path(g)
	if first {
		m.delegate(parent)
	}
	for {
		n := m.seq.Add(1)
		dir := filepath.Join(parent, "cmd-"+strconv.FormatUint(n, 10))
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, os.ErrExist) {
			continue // left by an earlier envd
		}
		if err != nil {
			return nil, fmt.Errorf("create command cgroup: %w", err)
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			os.Remove(dir)
			return nil, fmt.Errorf("open command cgroup: %w", err)
		}
		return &Command{dir: dir, parent: parent, fd: fd}, nil
	}
}

// delegate turns on, for the command groups under parent, the controllers
// whose numbers a report gives. Best effort: without them the report says
// which fields are unavailable. It must happen before any process lives in
// parent itself, which cgroup v2 forbids once controllers are delegated.
func (m *Manager) delegate(parent string) {
	ctrls, err := Controllers(parent)
	if err != nil {
		m.log.Warn("read command cgroup controllers", "dir", parent, "err", err)
		return
	}
	var enable []string
	for _, c := range []string{"cpu", "memory"} {
		if slices.Contains(ctrls, c) {
			enable = append(enable, "+"+c)
		}
	}
	if len(enable) == 0 {
		return
	}
	if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0); err != nil {
		m.log.Warn("enable controllers for command cgroups", "dir", parent, "controllers", enable, "err", err)
	}
}

// FD is the group's directory fd, for CLONE_INTO_CGROUP; valid until Remove.
func (c *Command) FD() int { return c.fd }

// Path is the group's directory.
func (c *Command) Path() string { return c.dir }

// Usage reads what the kernel measured for the group so far.
func (c *Command) Usage() Usage {
	var u Usage
	if b, err := os.ReadFile(filepath.Join(c.dir, "memory.peak")); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			u.PeakMemory, u.HasPeakMemory = n, true
		}
	}
	if b, err := os.ReadFile(filepath.Join(c.dir, "memory.events")); err == nil {
		if n, err := ParseKeyed(b, "oom_kill"); err == nil {
			u.OOMKills, u.HasOOMKills = n, true
		}
	}
	// cpu.stat is a core file: it reports user and system time even
	// without the cpu controller.
	if b, err := os.ReadFile(filepath.Join(c.dir, "cpu.stat")); err == nil {
		user, uerr := ParseKeyed(b, "user_usec")
		sys, serr := ParseKeyed(b, "system_usec")
		if uerr == nil && serr == nil {
			u.CPUUserUsec, u.CPUSystemUsec, u.HasCPU = uint64(user), uint64(sys), true
		}
	}
	return u
}

// Remove closes the fd and removes the group. Processes still in it (ones
// the command left running) move to the escaped leaf first.
func (c *Command) Remove() error {
	c.CloseFD()
	var err error
	for range 3 {
		if err = unix.Rmdir(c.dir); err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		if merr := c.evacuate(); merr != nil {
			return fmt.Errorf("remove command cgroup %s: %w", c.dir, merr)
		}
	}
	return fmt.Errorf("remove command cgroup %s: %w", c.dir, err)
}

func (c *Command) evacuate() error {
	b, err := os.ReadFile(filepath.Join(c.dir, "cgroup.procs"))
	if err != nil {
		return err
	}
	dst := filepath.Join(c.parent, escaped)
	if err := os.Mkdir(dst, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	for pid := range strings.FieldsSeq(string(b)) {
		if err := os.WriteFile(filepath.Join(dst, "cgroup.procs"), []byte(pid), 0); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	return nil
}

// CloseFD closes the directory fd once the child was cloned into the group;
// Usage and Remove work by path.
func (c *Command) CloseFD() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}
