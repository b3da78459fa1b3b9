package proc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
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
//
// A command that cannot be exec'd is answered as a shell would answer it:
// the process starts, says why on its stderr or pty, and exits 127 or 126.
// Errors that are not the command's fault (cwd, user, empty cmd, resources)
// fail Start instead.
func (m *Manager) Start(o StartOptions) (*Process, *Subscription, error) {
	l, err := m.resolve(o)
	if err != nil {
		return nil, nil, err
	}
	p := &Process{
		m:      m,
		tag:    o.Tag,
		hasTag: o.HasTag,
		config: o.Config,
		isPTY:  o.PTY != nil,
		done:   make(chan struct{}),

		deadline: o.Deadline,
	}
	if m.logLimit > 0 {
		p.log = newOutputLog(m.logLimit, &m.logBytes, m.logTotal)
	}
	sio, err := p.openStdio(o)
	if err != nil {
		return nil, nil, err
	}
	defer sio.closeChildEnds()
	var sub *Subscription
	if o.Subscribe != nil {
		sub = p.Subscribe(o.Subscribe)
	}
	if err := m.fork(p, l, sio); err != nil {
		if sub != nil {
			sub.Close()
		}
		p.closeParentEnds()
		return nil, nil, err
	}
	m.launch(p, o.Deadline)
	return p, sub, nil
}

// launch is the bookkeeping of a forked process: the table, its lifetime
// timer, its output readers and the goroutine that publishes its end.
func (m *Manager) launch(p *Process, deadline time.Time) {
	if m.onFork != nil {
		m.onFork(p.pid)
	}
	m.register(p)
	if !deadline.IsZero() {
		p.timer = time.AfterFunc(time.Until(deadline), func() { _ = p.Signal(syscall.SIGKILL) })
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
}

// launchSpec is what resolve found: where and how to exec, or, for a
// command that cannot be exec'd, the shell's answer to give instead.
type launchSpec struct {
	path    string
	argv    []string
	dir     string
	env     []string
	cmdline string // for error messages
	answer  *shellAnswer
	sys     *syscall.SysProcAttr
}

// shellAnswer is what bash prints and exits with when it cannot run a
// command; fallback is the error Start returns if no /bin/sh exists to
// deliver the answer.
type shellAnswer struct {
	msg      string
	code     int
	fallback error
}

// resolve checks the request and looks the command up in the PATH the child
// will get.
func (m *Manager) resolve(o StartOptions) (*launchSpec, error) {
	c := o.Config
	if c.Cmd == "" {
		return nil, errorf(ErrInvalid, "error starting process: cmd is empty")
	}
	u := o.User
	env := m.env.ProcessEnv(u, c.Envs)
	cwd := ""
	if c.Cwd != nil {
		cwd = *c.Cwd
	}
	dir, err := execenv.Resolve(cwd, u.Home, m.env.Snapshot().Workdir)
	if err != nil {
		return nil, errorf(ErrInvalid, "%v", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, errorf(ErrInvalid, "cwd '%s' does not exist", dir)
	} else if !fi.IsDir() {
		return nil, errorf(ErrInvalid, "cwd '%s' is not a directory", dir)
	}
	l := &launchSpec{
		argv:    append([]string{c.Cmd}, c.Args...),
		dir:     dir,
		env:     env,
		cmdline: strings.Join(append([]string{c.Cmd}, c.Args...), " "),
		sys:     &syscall.SysProcAttr{},
	}
	if cred := credential(u); cred != nil {
		l.sys.Credential = cred
	}
	l.path, err = lookPath(c.Cmd, dir, env)
	if err != nil {
		l.answer = answerFor(c.Cmd, err, true)
		l.answer.fallback = errorf(ErrInvalid, "error starting process '%s': %v", l.cmdline, err)
	}
	return l, nil
}

// answerFor words a failed lookup or exec as bash does; lookup tells a
// missing command (not found) from a present one whose exec failed.
func answerFor(cmd string, err error, lookup bool) *shellAnswer {
	switch {
	case errors.Is(err, errNotFound), lookup && errors.Is(err, fs.ErrNotExist):
		return &shellAnswer{msg: cmd + ": command not found", code: 127}
	case errors.Is(err, fs.ErrPermission):
		return &shellAnswer{msg: cmd + ": Permission denied", code: 126}
	case errors.Is(err, errIsDir):
		return &shellAnswer{msg: cmd + ": Is a directory", code: 126}
	case errors.Is(err, fs.ErrNotExist):
		// The file exists (lookPath saw it) but its #! interpreter does not.
		return &shellAnswer{msg: cmd + ": cannot execute: required file not found", code: 127}
	}
	text := err.Error()
	if errno := syscall.Errno(0); errors.As(err, &errno) {
		text = errno.Error()
	}
	if text != "" {
		text = strings.ToUpper(text[:1]) + text[1:]
	}
	if lookup {
		return &shellAnswer{msg: cmd + ": " + text, code: 126}
	}
	return &shellAnswer{msg: cmd + ": cannot execute: " + text, code: 126}
}

// stdio holds the descriptors of one Start: the child's ends, closed in the
// parent once the fork is done, and the fds the child gets as 0, 1 and 2.
type stdio struct {
	child []*os.File
	files []uintptr
}

func (s *stdio) closeChildEnds() {
	for _, f := range s.child {
		f.Close()
	}
}

// stderr is the child's fd 2, where a shell answer is written.
func (s *stdio) stderr() uintptr { return s.files[2] }

// openStdio creates the pty or the pipes; the parent's ends go into p.
func (p *Process) openStdio(o StartOptions) (*stdio, error) {
	s := &stdio{}
	if o.PTY != nil {
		master, slave, err := openPTY(*o.PTY)
		if err != nil {
			return nil, errorf(ErrInvalid, "error starting pty: %v", err)
		}
		s.child = append(s.child, slave)
		p.tty, p.stdin, p.outputs = master, master, []*os.File{master}
		fd := slave.Fd()
		s.files = []uintptr{fd, fd, fd}
		return s, nil
	}
	fail := func(err error) (*stdio, error) {
		s.closeChildEnds()
		p.closeParentEnds()
		return nil, err
	}
	var stdin *os.File
	if o.Stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(errorf(ErrInternal, "create stdin pipe: %v", err))
		}
		stdin, p.stdin = r, w
	} else {
		var err error
		if stdin, err = os.Open(os.DevNull); err != nil {
			return fail(errorf(ErrInternal, "open %s: %v", os.DevNull, err))
		}
	}
	s.child = append(s.child, stdin)
	s.files = append(s.files, stdin.Fd())
	for range 2 {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(errorf(ErrInternal, "create output pipe: %v", err))
		}
		p.outputs = append(p.outputs, r)
		s.child = append(s.child, w)
		s.files = append(s.files, w.Fd())
	}
	return s, nil
}

// closeParentEnds undoes openStdio's parent side after a failed Start.
func (p *Process) closeParentEnds() {
	for _, f := range p.outputs {
		f.Close()
	}
	if p.stdin != nil && p.stdin != p.tty {
		p.stdin.Close()
	}
}

// fork starts the child under the reaper's lock. A script without #! is
// run with /bin/sh, as POSIX execvp does; a command that cannot be exec'd
// gets its shell answer.
func (m *Manager) fork(p *Process, l *launchSpec, sio *stdio) error {
	sys := l.sys
	if p.isPTY {
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
	} else {
		sys.Setpgid = true
	}
	// The tag "_system" marks the orchestrator's own commands (a reclaim
	// shell after /freeze): they stay in envd's cgroup, which is never frozen.
	if m.placer != nil && !(p.hasTag && p.tag == SystemTag) {
		cg, err := m.placer.Command(p.isPTY)
		if err != nil {
			// Never fail a Start for cgroups: the report says what is missing.
			m.log.Warn("create command cgroup", "err", err)
		} else if cg != nil {
			p.cg = cg
			sys.UseCgroupFD, sys.CgroupFD = true, cg.FD()
		}
	}
	attr := &syscall.ProcAttr{Dir: l.dir, Env: l.env, Files: sio.files, Sys: sys}
	pid, exit, err := m.reaper.Start(func() (int, error) {
		if l.answer == nil {
			pid, err := forkExec(l.path, l.argv, attr)
			if errors.Is(err, syscall.ENOEXEC) {
				pid, err = forkExec(m.shell, append([]string{"sh", l.path}, l.argv[1:]...), attr)
			}
			if err == nil || resourceError(err) {
				return pid, err
			}
			l.answer = answerFor(l.argv[0], err, false)
			l.answer.fallback = errorf(ErrInvalid, "error starting process '%s': %v", l.cmdline, err)
		}
		return m.answer(l.answer, attr, sio.stderr())
	})
	if p.cg != nil {
		p.cg.CloseFD()
	}
	if err != nil {
		if p.cg != nil {
			_ = p.cg.Remove()
		}
		if ke := (*kindError)(nil); errors.As(err, &ke) {
			return err // the answer's own error: no shell to give it
		}
		kind := ErrInvalid
		if resourceError(err) {
			kind = ErrInternal // envd's or the machine's limits
		}
		return errorf(kind, "error starting process '%s': %v", l.cmdline, err)
	}
	p.pid, p.exit, p.startedAt = pid, exit, m.now()
	return nil
}

// answer writes a shell answer where the command's stderr would go and
// starts a shell that only exits with its code, so the client gets a real
// process: a start event, the message, an end event.
func (m *Manager) answer(a *shellAnswer, attr *syscall.ProcAttr, stderr uintptr) (int, error) {
	if _, err := os.Stat(m.shell); err != nil {
		return 0, a.fallback
	}
	// Written before the child exists, so the message precedes its exit; the
	// pipe (or pty) is empty, so this short write cannot block.
	if _, err := unix.Write(int(stderr), []byte(a.msg+"\n")); err != nil {
		return 0, errorf(ErrInternal, "write to the new process's stderr: %v", err)
	}
	return forkExec(m.shell, []string{"sh", "-c", "exit " + strconv.Itoa(a.code)}, attr)
}

func resourceError(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.EAGAIN)
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
	path, denied := "", false
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
		err := executable(p)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, fs.ErrPermission) {
			denied = true
		}
	}
	if denied {
		// As execvp and bash: a match that is not executable beats none.
		return "", fmt.Errorf("exec: %q: %w", cmd, fs.ErrPermission)
	}
	return "", fmt.Errorf("exec: %q: %w", cmd, errNotFound)
}

var (
	errNotFound = errors.New("executable file not found in $PATH")
	errIsDir    = errors.New("is a directory")
)

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errIsDir
	}
	if fi.Mode()&0o111 == 0 {
		return fs.ErrPermission
	}
	return nil
}
