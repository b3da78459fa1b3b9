package proc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/cgroup"
	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/proc"
	"github.com/envd-dev/envd/internal/proc/proctest"
	"github.com/envd-dev/envd/internal/testkit"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	testkit.RunHelper()
	os.Exit(m.Run())
}

type fixture struct {
	m     *proc.Manager
	env   *execenv.Env
	clock *testkit.Clock
	user  *execenv.User
}

func newFixture(t *testing.T, mutate ...func(*proc.Options)) *fixture {
	t.Helper()
	pf := proctest.New(t, mutate...)
	u, err := execenv.LookupUser(currentUser(t))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{m: pf.Manager, env: pf.Env, clock: pf.Clock, user: u}
}

func currentUser(t *testing.T) string {
	u, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

func pidfdOpen(pid int) (int, error) { return unix.PidfdOpen(pid, 0) }

// waitPidfd waits until the process behind fd has exited (a pidfd polls
// readable then), giving up after a generous bound so a failure cannot hang
// the suite.
func waitPidfd(fd int) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 60_000)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("still alive after 60s")
		}
		return nil
	}
}

type output struct {
	stdout, stderr, pty bytes.Buffer
	res                 proc.Result
}

// collect reads a subscription the way the API streams do: until the
// process is done, then whatever is still queued.
func collect(t *testing.T, p *proc.Process, sub *proc.Subscription) *output {
	t.Helper()
	o := &output{}
	for {
		select {
		case c := <-sub.C:
			o.add(c)
			continue
		case <-p.Done():
		}
		for {
			select {
			case c := <-sub.C:
				o.add(c)
				continue
			default:
			}
			break
		}
		o.res = p.Result()
		return o
	}
}

func (f *fixture) start(t *testing.T, o proc.StartOptions) (*proc.Process, *proc.Subscription) {
	t.Helper()
	if o.User == nil {
		o.User = f.user
	}
	if o.Subscribe == nil {
		o.Subscribe = t.Context()
	}
	p, sub, err := f.m.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	return p, sub
}

func helper(name string, args ...string) proc.Config {
	cmd, a := testkit.Helper(name, args...)
	return proc.Config{Cmd: cmd, Args: a, Envs: testkit.HelperEnv()}
}

func TestOutputAndExitStatus(t *testing.T) {
	f := newFixture(t)
	p, sub := f.start(t, proc.StartOptions{Config: helper("echo", "hello", "world")})
	o := collect(t, p, sub)
	if o.stdout.String() != "hello world\n" || o.res != (proc.Result{ExitCode: 0, Exited: true, Status: "exit status 0"}) {
		t.Fatalf("stdout %q result %+v", o.stdout.String(), o.res)
	}

	p, sub = f.start(t, proc.StartOptions{Config: helper("stderr", "oops")})
	if o := collect(t, p, sub); o.stderr.String() != "oops\n" || o.stdout.Len() != 0 {
		t.Fatalf("stdout %q stderr %q", o.stdout.String(), o.stderr.String())
	}

	p, sub = f.start(t, proc.StartOptions{Config: helper("exit", "3")})
	want := proc.Result{ExitCode: 3, Exited: true, Status: "exit status 3", Err: "exit status 3"}
	if o := collect(t, p, sub); o.res != want {
		t.Fatalf("got %+v want %+v", o.res, want)
	}
}

func TestSignals(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		sig    syscall.Signal
		status string
	}{{syscall.SIGKILL, "signal: killed"}, {syscall.SIGTERM, "signal: terminated"}} {
		p, sub := f.start(t, proc.StartOptions{Config: helper("hang")})
		if err := p.Signal(tc.sig); err != nil {
			t.Fatal(err)
		}
		want := proc.Result{ExitCode: -1, Status: tc.status, Err: tc.status}
		if o := collect(t, p, sub); o.res != want {
			t.Fatalf("got %+v want %+v", o.res, want)
		}
		if err := p.Signal(tc.sig); !errors.Is(err, proc.ErrNotFound) {
			t.Fatalf("signal after exit: %v", err)
		}
		// Reaped, not a zombie: the pid is gone (or reused by someone else).
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid())); err == nil && statState(string(st)) == "Z" {
			t.Fatalf("pid %d is a zombie", p.Pid())
		}
	}
}

func statState(stat string) string {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 || i+3 > len(stat) {
		return ""
	}
	return stat[i+2 : i+3]
}

func TestSignalReachesGrandchild(t *testing.T) {
	f := newFixture(t)
	p, sub := f.start(t, proc.StartOptions{Config: helper("grandchild")})
	var line []byte
	for !bytes.Contains(line, []byte("\n")) {
		c := <-sub.C
		line = append(line, c.Data...)
	}
	gpid, err := strconv.Atoi(strings.TrimSpace(string(line)))
	if err != nil {
		t.Fatal(err)
	}
	pidfd, err := pidfdOpen(gpid)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(pidfd)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	collect(t, p, sub)
	// The grandchild is not our child, so wait for its death via its pidfd.
	if err := waitPidfd(pidfd); err != nil {
		t.Fatalf("grandchild %d did not die: %v", gpid, err)
	}
}

func TestPTYSizeAndResize(t *testing.T) {
	f := newFixture(t)
	p, sub := f.start(t, proc.StartOptions{Config: helper("ptysize"), PTY: &proc.Size{Cols: 123, Rows: 45}})
	readUntil(t, sub, "size 45 123")
	if err := p.Resize(proc.Size{Cols: 80, Rows: 24}); err != nil {
		t.Fatal(err)
	}
	readUntil(t, sub, "size 24 80")
	if err := p.CloseStdin(); !errors.Is(err, proc.ErrPrecondition) {
		t.Fatalf("CloseStdin on pty: %v", err)
	}
	if err := p.WriteStdin(t.Context(), []byte("x")); !errors.Is(err, proc.ErrPrecondition) {
		t.Fatalf("WriteStdin on pty: %v", err)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if o := collect(t, p, sub); o.res.Status != "signal: killed" {
		t.Fatalf("%+v", o.res)
	}
}

func readUntil(t *testing.T, sub *proc.Subscription, want string) {
	t.Helper()
	var got []byte
	for !bytes.Contains(got, []byte(want)) {
		c, ok := <-sub.C
		if !ok {
			t.Fatalf("subscription closed; got %q, want %q", got, want)
		}
		got = append(got, c.Data...)
	}
}

func TestStdin(t *testing.T) {
	f := newFixture(t)
	p, sub := f.start(t, proc.StartOptions{Config: helper("cat"), Stdin: true})
	for _, s := range []string{"one ", "", "two"} {
		if err := p.WriteStdin(t.Context(), []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.WritePTY(t.Context(), []byte("x")); !errors.Is(err, proc.ErrPrecondition) {
		t.Fatalf("WritePTY on pipes: %v", err)
	}
	if err := p.Resize(proc.Size{Cols: 1, Rows: 1}); !errors.Is(err, proc.ErrPrecondition) {
		t.Fatalf("Resize on pipes: %v", err)
	}
	for range 2 { // idempotent
		if err := p.CloseStdin(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.WriteStdin(t.Context(), []byte("late")); !errors.Is(err, proc.ErrPrecondition) {
		t.Fatalf("write after close: %v", err)
	}
	if o := collect(t, p, sub); o.stdout.String() != "one two" || o.res.ExitCode != 0 {
		t.Fatalf("%q %+v", o.stdout.String(), o.res)
	}

	// stdin disabled: the child reads /dev/null and ends at once.
	p, sub = f.start(t, proc.StartOptions{Config: helper("cat"), Stdin: false})
	if o := collect(t, p, sub); o.stdout.Len() != 0 || o.res.ExitCode != 0 {
		t.Fatalf("%q %+v", o.stdout.String(), o.res)
	}
	if err := p.WriteStdin(t.Context(), []byte("x")); !errors.Is(err, proc.ErrPrecondition) {
		t.Fatalf("write to disabled stdin: %v", err)
	}
}

func TestCwd(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	p, sub := f.start(t, proc.StartOptions{Config: proc.Config{Cmd: "pwd", Cwd: &dir}})
	if o := collect(t, p, sub); o.stdout.String() != dir+"\n" {
		t.Fatalf("pwd %q want %q", o.stdout.String(), dir)
	}
	// Absent cwd: default workdir when set, else home.
	p, sub = f.start(t, proc.StartOptions{Config: proc.Config{Cmd: "pwd"}})
	if o := collect(t, p, sub); o.stdout.String() != f.user.Home+"\n" {
		t.Fatalf("pwd %q want home %q", o.stdout.String(), f.user.Home)
	}
	f.env.SetDefaultWorkdir(dir)
	p, sub = f.start(t, proc.StartOptions{Config: proc.Config{Cmd: "pwd"}})
	if o := collect(t, p, sub); o.stdout.String() != dir+"\n" {
		t.Fatalf("pwd %q want workdir %q", o.stdout.String(), dir)
	}
}

func TestStartErrors(t *testing.T) {
	f := newFixture(t)
	missing := "/no/such/dir"
	file, err := os.Executable() // absolute, however the test binary was started
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		cfg  proc.Config
		want string
	}{
		"empty cmd":     {proc.Config{}, "error starting process: cmd is empty"},
		"missing cwd":   {proc.Config{Cmd: "true", Cwd: &missing}, "cwd '/no/such/dir' does not exist"},
		"cwd is a file": {proc.Config{Cmd: "true", Cwd: &file}, "cwd '" + file + "' is not a directory"},
	} {
		_, _, err := f.m.Start(proc.StartOptions{Config: tc.cfg, User: f.user, Subscribe: t.Context()})
		if !errors.Is(err, proc.ErrInvalid) || err.Error() != tc.want {
			t.Errorf("%s: got %v\nwant %s", name, err, tc.want)
		}
	}
	if live := f.m.List(); len(live) != 0 {
		t.Fatalf("failed starts left processes: %+v", live)
	}
}

// A command that cannot be exec'd is answered as bash answers it: the
// process starts, prints why on stderr (or the pty), and exits 127 or 126.
// A script without #! runs under /bin/sh, as execvp runs it.
func TestUnexecutableAnswersAsShell(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	noShebang := write("noshebang", "echo \"script $0 $1\"\n", 0o755)
	badInterp := write("badinterp", "#!/no/such/interpreter\n", 0o755)
	write("plain", "x\n", 0o644)
	pathEnv := map[string]string{"PATH": dir + ":/usr/bin:/bin"}
	for name, tc := range map[string]struct {
		cfg    proc.Config
		code   int
		stdout string
		stderr string
	}{
		"missing binary":      {proc.Config{Cmd: "no-such-binary-envd", Args: []string{"a"}}, 127, "", "no-such-binary-envd: command not found\n"},
		"missing path":        {proc.Config{Cmd: "/no/such/binary"}, 127, "", "/no/such/binary: command not found\n"},
		"missing relative":    {proc.Config{Cmd: "./no-such-binary", Cwd: &dir}, 127, "", "./no-such-binary: command not found\n"},
		"not executable":      {proc.Config{Cmd: "/etc/passwd"}, 126, "", "/etc/passwd: Permission denied\n"},
		"not executable PATH": {proc.Config{Cmd: "plain", Envs: pathEnv}, 126, "", "plain: Permission denied\n"},
		"directory":           {proc.Config{Cmd: dir}, 126, "", dir + ": Is a directory\n"},
		"no #!":               {proc.Config{Cmd: noShebang, Args: []string{"arg"}}, 0, "script " + noShebang + " arg\n", ""},
		"bad interpreter":     {proc.Config{Cmd: badInterp}, 127, "", badInterp + ": cannot execute: required file not found\n"},
	} {
		p, sub := f.start(t, proc.StartOptions{Config: tc.cfg})
		o := collect(t, p, sub)
		want := proc.Result{ExitCode: tc.code, Exited: true, Status: "exit status " + strconv.Itoa(tc.code)}
		if tc.code != 0 {
			want.Err = want.Status
		}
		if o.res != want || o.stdout.String() != tc.stdout || o.stderr.String() != tc.stderr {
			t.Errorf("%s: %+v stdout %q stderr %q; want %+v %q %q", name, o.res, o.stdout.String(), o.stderr.String(), want, tc.stdout, tc.stderr)
		}
	}
	// On a pty the answer is terminal output, newline translated.
	p, sub := f.start(t, proc.StartOptions{Config: proc.Config{Cmd: "no-such-binary-envd"}, PTY: &proc.Size{Cols: 80, Rows: 24}})
	if o := collect(t, p, sub); o.res.ExitCode != 127 || o.pty.String() != "no-such-binary-envd: command not found\r\n" {
		t.Errorf("pty: %+v %q", o.res, o.pty.String())
	}
}

// Without a shell to deliver the answer, Start fails as it did before.
func TestUnexecutableWithoutShell(t *testing.T) {
	f := newFixture(t, func(o *proc.Options) { o.Shell = "/no/such/sh" })
	for name, tc := range map[string]struct {
		cfg  proc.Config
		want string
	}{
		"missing binary": {proc.Config{Cmd: "no-such-binary-envd"}, `error starting process 'no-such-binary-envd': exec: "no-such-binary-envd": executable file not found in $PATH`},
		"missing path":   {proc.Config{Cmd: "/no/such/binary", Args: []string{"a"}}, `error starting process '/no/such/binary a': exec: "/no/such/binary": stat /no/such/binary: no such file or directory`},
		"not executable": {proc.Config{Cmd: "/etc/passwd"}, `error starting process '/etc/passwd': exec: "/etc/passwd": permission denied`},
	} {
		_, _, err := f.m.Start(proc.StartOptions{Config: tc.cfg, User: f.user, Subscribe: t.Context()})
		if !errors.Is(err, proc.ErrInvalid) || err.Error() != tc.want {
			t.Errorf("%s: got %v\nwant %s", name, err, tc.want)
		}
	}
	if live := f.m.List(); len(live) != 0 {
		t.Fatalf("failed starts left processes: %+v", live)
	}
}

func TestRetention(t *testing.T) {
	f := newFixture(t)
	p, sub := f.start(t, proc.StartOptions{Config: helper("exit", "7"), Tag: "job", HasTag: true})
	collect(t, p, sub)
	sel := proc.Selector{Pid: p.Pid()}
	if _, err := f.m.Get(sel); !errors.Is(err, proc.ErrNotFound) {
		t.Fatalf("Get after exit: %v", err)
	}
	for _, s := range []proc.Selector{sel, {Tag: "job", ByTag: true}} {
		q, err := f.m.GetRetained(s)
		if err != nil || q != p || q.Result().ExitCode != 7 {
			t.Fatalf("GetRetained(%+v) = %v, %v", s, q, err)
		}
	}
	f.clock.Add(proc.DefaultRetention - time.Second)
	if _, err := f.m.GetRetained(sel); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	f.clock.Add(time.Second)
	_, err := f.m.GetRetained(sel)
	if want := fmt.Sprintf("process with pid %d not found", p.Pid()); !errors.Is(err, proc.ErrNotFound) || err.Error() != want {
		t.Fatalf("after expiry: %v", err)
	}
	if _, err := f.m.GetRetained(proc.Selector{Tag: "job", ByTag: true}); err == nil || err.Error() != "process with tag job not found" {
		t.Fatalf("tag after expiry: %v", err)
	}

	// A new start with the same tag evicts the retained exit at once.
	p, sub = f.start(t, proc.StartOptions{Config: helper("exit", "1"), Tag: "again", HasTag: true})
	collect(t, p, sub)
	q, sub2 := f.start(t, proc.StartOptions{Config: helper("hang"), Tag: "again", HasTag: true})
	defer sub2.Close()
	got, err := f.m.GetRetained(proc.Selector{Tag: "again", ByTag: true})
	if err != nil || got != q {
		t.Fatalf("tag lookup after restart: %v %v", got, err)
	}
	_ = q.Signal(syscall.SIGKILL)
	collect(t, q, sub2)
	if got, _ := f.m.GetRetained(proc.Selector{Pid: p.Pid()}); got == p {
		t.Fatal("retained exit with the same tag was not evicted")
	}
}

func TestTagLookupAmongMany(t *testing.T) {
	f := newFixture(t)
	byTag := map[string]*proc.Process{}
	for i := range 40 {
		tag := fmt.Sprintf("tag-%d", i%20) // every tag twice: the later must win
		p, sub := f.start(t, proc.StartOptions{Config: helper("hang"), Tag: tag, HasTag: true})
		sub.Close()
		byTag[tag] = p
	}
	untagged, sub := f.start(t, proc.StartOptions{Config: helper("hang")})
	sub.Close()
	for tag, want := range byTag {
		got, err := f.m.Get(proc.Selector{Tag: tag, ByTag: true})
		if err != nil || got != want {
			t.Fatalf("tag %s: got %v, %v; want pid %d", tag, got, err, want.Pid())
		}
	}
	if _, err := f.m.Get(proc.Selector{Tag: "", ByTag: true}); !errors.Is(err, proc.ErrNotFound) {
		t.Fatalf("empty tag matched an untagged process: %v", err)
	}
	if got, err := f.m.Get(proc.Selector{Pid: untagged.Pid()}); err != nil || got != untagged {
		t.Fatalf("pid lookup: %v %v", got, err)
	}
	if n := len(f.m.List()); n != 41 {
		t.Fatalf("List has %d processes, want 41", n)
	}
}

func TestDeadlineKillsGroup(t *testing.T) {
	f := newFixture(t)
	p, sub := f.start(t, proc.StartOptions{Config: helper("hang"), Deadline: time.Now().Add(50 * time.Millisecond)})
	if o := collect(t, p, sub); o.res.Status != "signal: killed" || o.res.ExitCode != -1 {
		t.Fatalf("%+v", o.res)
	}
}

// A subscriber that stops reading but whose context ended must not block the
// process or the other subscribers.
func TestGoneSubscriberDoesNotBlock(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	p, stuck := f.start(t, proc.StartOptions{Config: helper("write", strconv.Itoa(8<<20)), Subscribe: ctx})
	live := p.Subscribe(t.Context())
	cancel()
	_ = stuck // never read
	o := collect(t, p, live)
	if o.res.ExitCode != 0 {
		t.Fatalf("%+v", o.res)
	}
}

// Each process gets a cgroup of its own under the Placer's group for its
// kind at clone time, gone once the process ended; OnFork sees the pid
// before Start returns.
func TestPlacerAndOnFork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating a cgroup needs root")
	}
	root := "/sys/fs/cgroup/unified"
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		root = "/sys/fs/cgroup"
	}
	if _, err := os.Stat(filepath.Join(root, "cgroup.subtree_control")); err != nil {
		t.Skip("no cgroup v2 hierarchy mounted")
	}
	name := fmt.Sprintf("envd-proc-test-%d", os.Getpid())
	dir := filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cgroup v2 hierarchy at %s is not writable: %v", root, err)
	}
	cg := cgroup.Open(dir, nil, slog.New(slog.DiscardHandler))
	defer func() {
		cg.Close()
		for _, g := range cgroup.Groups() {
			os.Remove(filepath.Join(dir, string(g), "escaped"))
			os.Remove(filepath.Join(dir, string(g)))
		}
		os.Remove(dir)
	}()
	if !cg.Enabled() {
		t.Fatal("cgroup manager disabled on a writable cgroup2 directory")
	}
	var forked []int
	f := newFixture(t, func(o *proc.Options) {
		o.Placer = cg
		o.OnFork = func(pid int) { forked = append(forked, pid) }
	})
	for _, tc := range []struct {
		pty   *proc.Size
		group cgroup.Group
	}{{nil, cgroup.User}, {&proc.Size{Cols: 1, Rows: 1}, cgroup.PTY}} {
		forked = nil
		p, sub := f.start(t, proc.StartOptions{Config: helper("hang"), PTY: tc.pty})
		if len(forked) != 1 || forked[0] != p.Pid() {
			t.Fatalf("OnFork saw %v, pid %d", forked, p.Pid())
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		prefix := "0::/" + name + "/" + string(tc.group) + "/cmd-"
		var line string
		for l := range strings.Lines(string(b)) {
			if strings.HasPrefix(l, "0::") {
				line = strings.TrimSpace(l)
			}
		}
		if !strings.HasPrefix(line, prefix) {
			t.Fatalf("child cgroup %q, want %s*", b, prefix)
		}
		own := filepath.Join(dir, strings.TrimPrefix(line, "0::/"+name+"/"))
		_ = p.Signal(syscall.SIGKILL)
		collect(t, p, sub)
		if _, err := os.Stat(own); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("command cgroup %s still there after the exit: %v", own, err)
		}
	}
}

// A write to a process that never reads stdin gives up when its context
// ends, and the process is unaffected.
func TestStdinWriteCanceled(t *testing.T) {
	f := newFixture(t)
	p, sub := f.start(t, proc.StartOptions{Config: helper("hang"), Stdin: true})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- p.WriteStdin(ctx, make([]byte, 4<<20)) }() // beyond any pipe buffer
	cancel()
	if err := <-errc; !errors.Is(err, proc.ErrCanceled) {
		t.Fatalf("blocked write: %v", err)
	}
	if _, err := f.m.Get(proc.Selector{Pid: p.Pid()}); err != nil {
		t.Fatalf("process gone after a canceled write: %v", err)
	}
	_ = p.Signal(syscall.SIGKILL)
	if o := collect(t, p, sub); o.res.Status != "signal: killed" {
		t.Fatalf("%+v", o.res)
	}
}
