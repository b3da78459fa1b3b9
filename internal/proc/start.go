package proc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/execenv"
)

// StartOptions describe a process to start.
type StartOptions struct {
	Config Config
	User   *execenv.User
	Tag    string
	HasTag bool
	Stdin  bool  // false: stdin is /dev/null
	PTY    *Size // nil: pipes
	// Deadline, if set, is the process's lifetime: its group is SIGKILLed then.
	Deadline time.Time
	// Subscribe, if set, attaches a subscription before the child exists, so
	// not even its first byte of output is missed.
	Subscribe context.Context
}

// Start forks and execs the command directly (no shell), as the user, in
// its own process group (or its own session with the pty as controlling
// terminal). The returned subscription is nil unless o.Subscribe was set.
func (m *Manager) Start(o StartOptions) (*Process, *Subscription, error) {
	c := o.Config
	if c.Cmd == "" {
		return nil, nil, errorf(ErrInvalid, "error starting process: cmd is empty")
	}
	u := o.User
	env := m.env.ProcessEnv(u, c.Envs)
	cwd := ""
	if c.Cwd != nil {
		cwd = *c.Cwd
	}
	dir, err := execenv.Resolve(cwd, u.Home, m.env.Snapshot().Workdir)
	if err != nil {
		return nil, nil, errorf(ErrInvalid, "%v", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, nil, errorf(ErrInvalid, "cwd '%s' does not exist", dir)
	} else if !fi.IsDir() {
		return nil, nil, errorf(ErrInvalid, "cwd '%s' is not a directory", dir)
	}
	cmdline := strings.Join(append([]string{c.Cmd}, c.Args...), " ")
	path, err := lookPath(c.Cmd, dir, env)
	if err != nil {
		return nil, nil, errorf(ErrInvalid, "error starting process '%s': %v", cmdline, err)
	}

	p := &Process{
		m:      m,
		tag:    o.Tag,
		hasTag: o.HasTag,
		config: c,
		isPTY:  o.PTY != nil,
		done:   make(chan struct{}),

		deadline: o.Deadline,
	}
	sys := &syscall.SysProcAttr{}
	if cred := credential(u); cred != nil {
		sys.Credential = cred
	}
	// The tag "_system" marks the orchestrator's own commands (a reclaim
	// shell after /freeze): they stay in envd's cgroup, which is never frozen.
	if m.placer != nil && !(o.HasTag && o.Tag == SystemTag) {
		if fd, ok := m.placer.CgroupFD(p.isPTY); ok {
			sys.UseCgroupFD, sys.CgroupFD = true, fd
		}
	}
	var childFiles []*os.File // closed in the parent after the fork
	defer func() {
		for _, f := range childFiles {
			f.Close()
		}
	}()
	var files []uintptr
	fail := func(err error) (*Process, *Subscription, error) {
		for _, f := range p.outputs {
			f.Close()
		}
		if p.stdin != nil && p.stdin != p.tty {
			p.stdin.Close()
		}
		return nil, nil, err
	}
	if o.PTY != nil {
		master, slave, err := openPTY(*o.PTY)
		if err != nil {
			return nil, nil, errorf(ErrInvalid, "error starting pty: %v", err)
		}
		childFiles = append(childFiles, slave)
		p.tty, p.stdin, p.outputs = master, master, []*os.File{master}
		fd := slave.Fd()
		files = []uintptr{fd, fd, fd}
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
	} else {
		var stdin *os.File
		if o.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				return fail(errorf(ErrInternal, "create stdin pipe: %v", err))
			}
			stdin, p.stdin = r, w
		} else if stdin, err = os.Open(os.DevNull); err != nil {
			return fail(errorf(ErrInternal, "open %s: %v", os.DevNull, err))
		}
		childFiles = append(childFiles, stdin)
		files = append(files, stdin.Fd())
		for range 2 {
			r, w, err := os.Pipe()
			if err != nil {
				return fail(errorf(ErrInternal, "create output pipe: %v", err))
			}
			p.outputs = append(p.outputs, r)
			childFiles = append(childFiles, w)
			files = append(files, w.Fd())
		}
		sys.Setpgid = true
	}

	var sub *Subscription
	if o.Subscribe != nil {
		sub = p.Subscribe(o.Subscribe)
	}
	attr := &syscall.ProcAttr{Dir: dir, Env: env, Files: files, Sys: sys}
	argv := append([]string{c.Cmd}, c.Args...)
	pid, exit, err := m.reaper.Start(func() (int, error) { return forkExec(path, argv, attr) })
	if err != nil {
		if sub != nil {
			sub.Close()
		}
		kind := ErrInvalid // the command's fault: not executable, bad interpreter, …
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.EAGAIN) {
			kind = ErrInternal // envd's or the machine's limits
		}
		return fail(errorf(kind, "error starting process '%s': %v", cmdline, err))
	}
	p.pid, p.exit = pid, exit
	if m.onFork != nil {
		m.onFork(pid)
	}
	m.register(p)

	if !o.Deadline.IsZero() {
		p.timer = time.AfterFunc(time.Until(o.Deadline), func() { _ = p.Signal(syscall.SIGKILL) })
	}
	streams := []Stream{Stdout, Stderr}
	if p.isPTY {
		streams = []Stream{PTY}
	}
	p.readers.Add(len(p.outputs))
	for i, f := range p.outputs {
		go p.pump(f, streams[i])
	}
	go p.finish()
	return p, sub, nil
}

// setPipeSize enlarges a pipe to pipeSize. Best effort: a smaller pipe only
// means more, smaller reads and writes (the kernel refuses beyond
// fs.pipe-max-size or a user's pipe quota).
func setPipeSize(f *os.File) {
	_ = control(f, func(fd int) error {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, pipeSize)
		return err
	})
}

// SystemTag is the process tag §8.1 step 5 keeps out of the workload cgroups.
const SystemTag = "_system"

// growAfter is how much must have gone through a pipe before it is enlarged:
// only busy pipes get the bigger ring (each 1 MiB pipe costs the kernel a
// 10 KiB slot array even when empty, which thousands of idle processes would
// otherwise pay).
const growAfter = 64 << 10

// forkExec is syscall.ForkExec, except that running out of descriptors is
// reported as that. The child moves ForkExec's status pipe (and any of its
// fds below their target slot) just above the highest fd it is given; when
// that fd is at the top of RLIMIT_NOFILE, which happens while other Starts
// free lower fds concurrently, the move fails with a bare EBADF.
func forkExec(path string, argv []string, attr *syscall.ProcAttr) (int, error) {
	pid, err := syscall.ForkExec(path, argv, attr)
	if errors.Is(err, syscall.EBADF) && !fdHeadroom(attr.Files) {
		err = syscall.EMFILE
	}
	return pid, err
}

// fdHeadroom reports whether every fd the child may move its descriptors to
// lies below the open-file limit.
func fdHeadroom(files []uintptr) bool {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return true
	}
	var top uint64
	for _, f := range files {
		top = max(top, uint64(f))
	}
	return top+1+uint64(len(files)) < lim.Cur
}

// credential switches to the user when envd may: as root always (with the
// user's supplementary groups); otherwise only a no-op switch is possible.
func credential(u *execenv.User) *syscall.Credential {
	if os.Geteuid() != 0 && int(u.UID) == os.Geteuid() && int(u.GID) == os.Getegid() {
		return nil
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
}

// lookPath finds cmd in the PATH the child will get (not envd's own), as
// execvp in the child would.
func lookPath(cmd, dir string, env []string) (string, error) {
	if strings.Contains(cmd, "/") {
		p := cmd
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := executable(p); err != nil {
			return "", fmt.Errorf("exec: %q: %w", cmd, err)
		}
		return p, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		p := filepath.Join(d, cmd)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", cmd)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("is a directory")
	}
	if fi.Mode()&0o111 == 0 {
		return fs.ErrPermission
	}
	return nil
}
