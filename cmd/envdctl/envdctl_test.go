package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envd-dev/envd/client"
	"github.com/envd-dev/envd/internal/envdtest"
)

// envdctlBin is the binary under test, built once by TestMain as a user
// builds it (static, CGO_ENABLED=0).
var envdctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "envdctl-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	envdctlBin = filepath.Join(dir, "envdctl")
	build := exec.Command("go", "build", "-o", envdctlBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building envdctl:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// waitOrKill waits for cmd; one that has not exited after a minute is a
// hang, killed so the test fails instead of blocking the suite.
func waitOrKill(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not exit", cmd.Args)
		return nil
	}
}

type result struct {
	code           int
	stdout, stderr string
}

// ctl runs envdctl against url with stdin.
func ctl(t *testing.T, url string, stdin []byte, args ...string) result {
	t.Helper()
	cmd := exec.Command(envdctlBin, append([]string{"--url", url}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// oneLineError checks a failure: the given exit code and exactly one line
// on stderr, starting "envdctl CMD:" and containing want.
func oneLineError(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "envdctl") || !strings.Contains(r.stderr, want) {
		t.Fatalf("want exit %d and one line with %q; got exit %d, stderr %q", code, want, r.code, r.stderr)
	}
}

func TestRunExitCodesAndStreams(t *testing.T) {
	s := envdtest.Start(t)
	r := ctl(t, s.URL, nil, "run", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("%+v", r)
	}
	r = ctl(t, s.URL, nil, "run", "--env", "A=b", "--cwd", "/tmp", "--", "sh", "-c", "echo $A; pwd")
	if r.code != 0 || r.stdout != "b\n/tmp\n" {
		t.Fatalf("%+v", r)
	}
	if r := ctl(t, s.URL, nil, "run", "--", "sh", "-c", "kill -9 $$"); r.code != 137 {
		t.Fatalf("killed by SIGKILL: exit %d, want 137", r.code)
	}
	// Local stdin (not a terminal) reaches the command, byte for byte.
	data := make([]byte, 2<<20)
	rand.Read(data)
	r = ctl(t, s.URL, data, "run", "--", "sha256sum")
	if want := fmt.Sprintf("%x  -\n", sha256.Sum256(data)); r.code != 0 || r.stdout != want {
		t.Fatalf("stdin through sha256sum: %+v, want %q", r, want)
	}
	// A missing command: envd answers as a shell would (127, "command not
	// found" on stderr), or, before it did, refuses the Start.
	if r := ctl(t, s.URL, nil, "run", "--", "/no/such/cmd"); r.code == 127 {
		if !strings.Contains(r.stderr, "/no/such/cmd") || !strings.Contains(r.stderr, "not found") {
			t.Fatalf("missing command: exit 127 with stderr %q", r.stderr)
		}
	} else {
		oneLineError(t, r, 1, "invalid argument")
	}
	oneLineError(t, ctl(t, s.URL, nil, "run", "--cwd", "/no/such", "--", "true"), 1, "does not exist")
	oneLineError(t, ctl(t, s.URL, nil, "run"), 2, "want a command")
	oneLineError(t, ctl(t, s.URL, nil, "run", "--env", "novalue", "--", "true"), 2, "K=V")
}

// Ctrl-C on envdctl run goes to the remote process, which ends by a signal.
func TestRunInterrupt(t *testing.T) {
	s := envdtest.Start(t)
	c := s.NewClient(t)
	cmd := exec.Command(envdctlBin, "--url", s.URL, "run", "--tag", "ctrlc", "--", "sleep", "1000")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until envd has it (Connect by tag succeeds), then interrupt.
	for {
		p, err := c.Connect(context.Background(), client.Tag("ctrlc"))
		if err == nil {
			p.Close()
			break
		}
		if cmd.ProcessState != nil {
			t.Fatal("envdctl exited early")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	waitOrKill(t, cmd)
	// envd delivers SIGINT itself (the fallback to TERM, 143, is for older
	// envds).
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("exit %d after Ctrl-C, want 130 (SIGINT); stderr %q", code, errb.String())
	}
	if list, _ := c.List(context.Background()); len(list) != 0 {
		t.Fatalf("still running after Ctrl-C: %+v", list)
	}
}

func TestCpRoundTrip(t *testing.T) {
	s := envdtest.Start(t)
	local := t.TempDir()
	remote := t.TempDir() // the daemon runs on this machine: "remote" is another dir
	data := make([]byte, 5<<20+3)
	rand.Read(data)
	src := filepath.Join(local, "big.bin")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	for _, gz := range [][]string{nil, {"--gzip"}} {
		back := filepath.Join(local, "back.bin")
		os.Remove(back)
		if r := ctl(t, s.URL, nil, append(append([]string{"cp"}, gz...), src, ":"+remote+"/")...); r.code != 0 {
			t.Fatalf("upload %v: %+v", gz, r)
		}
		if r := ctl(t, s.URL, nil, append(append([]string{"cp"}, gz...), ":"+remote+"/big.bin", back)...); r.code != 0 {
			t.Fatalf("download %v: %+v", gz, r)
		}
		got, _ := os.ReadFile(back)
		if sha256.Sum256(got) != want {
			t.Fatalf("%v: %d bytes back, checksum differs", gz, len(got))
		}
	}
	// stdin and stdout as the local side.
	if r := ctl(t, s.URL, []byte("from stdin"), "cp", "-", ":"+remote+"/piped"); r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if r := ctl(t, s.URL, nil, "cp", ":"+remote+"/piped", "-"); r.code != 0 || r.stdout != "from stdin" {
		t.Fatalf("%+v", r)
	}
	// A tree with -r, both ways.
	tree := filepath.Join(local, "tree")
	os.MkdirAll(filepath.Join(tree, "a", "b"), 0o755)
	os.MkdirAll(filepath.Join(tree, "empty"), 0o755)
	os.WriteFile(filepath.Join(tree, "a", "b", "f"), []byte("deep"), 0o644)
	os.WriteFile(filepath.Join(tree, "top"), []byte("top"), 0o644)
	oneLineError(t, ctl(t, s.URL, nil, "cp", tree, ":"+remote), 1, "is a directory (use -r)")
	if r := ctl(t, s.URL, nil, "cp", "-r", tree, ":"+remote); r.code != 0 {
		t.Fatalf("%+v", r)
	}
	out := filepath.Join(local, "out")
	if r := ctl(t, s.URL, nil, "cp", "-r", ":"+remote+"/tree", out); r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if diff, err := exec.Command("diff", "-r", tree, out).CombinedOutput(); err != nil {
		t.Fatalf("trees differ: %s", diff)
	}
	oneLineError(t, ctl(t, s.URL, nil, "cp", ":"+remote+"/missing", out), 1, "not found")
	oneLineError(t, ctl(t, s.URL, nil, "cp", "a", "b"), 2, "REMOTE")
	if _, err := os.Stat(filepath.Join(out, "missing")); !os.IsNotExist(err) {
		t.Fatal("a failed download left a file behind")
	}
}

func TestFilesystemCommands(t *testing.T) {
	s := envdtest.Start(t)
	dir := t.TempDir()
	oneLineError(t, ctl(t, s.URL, nil, "mkdir", dir+"/x/y"), 1, "not found")
	for _, args := range [][]string{{"mkdir", "-p", dir + "/x/y"}, {"mkdir", "-p", dir + "/x/y"}, {"mkdir", dir + "/x/z"}} {
		if r := ctl(t, s.URL, nil, args...); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	oneLineError(t, ctl(t, s.URL, nil, "mkdir", dir+"/x/z"), 1, "already exists")
	os.WriteFile(dir+"/x/f", []byte("12345"), 0o644)
	r := ctl(t, s.URL, nil, "--json", "ls", "--depth", "2", dir)
	var entries []client.Entry
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil || r.code != 0 {
		t.Fatalf("ls --json: %v, %+v", err, r)
	}
	var paths []string
	for _, e := range entries {
		paths = append(paths, strings.TrimPrefix(e.Path, dir))
	}
	if strings.Join(paths, " ") != "/x /x/f /x/y /x/z" {
		t.Fatalf("ls --depth 2: %v", paths)
	}
	if r := ctl(t, s.URL, nil, "ls", dir+"/x"); r.stdout != "f\ny/\nz/\n" {
		t.Fatalf("ls: %q", r.stdout)
	}
	if r := ctl(t, s.URL, nil, "ls", "-l", dir+"/x"); !strings.Contains(r.stdout, "-rw-r--r-- root root 5") {
		t.Fatalf("ls -l: %q", r.stdout)
	}
	r = ctl(t, s.URL, nil, "stat", "--json", dir+"/x/f")
	var e client.Entry
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || e.Size != 5 || e.Type != client.TypeFile || e.Mode != 0o644 {
		t.Fatalf("stat --json: %v, %+v", err, r)
	}
	if r := ctl(t, s.URL, nil, "mv", dir+"/x/f", dir+"/x/y"); r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if _, err := os.Stat(dir + "/x/y/f"); err != nil {
		t.Fatal("mv into a directory:", err)
	}
	oneLineError(t, ctl(t, s.URL, nil, "rm", dir+"/x"), 1, "is a directory")
	oneLineError(t, ctl(t, s.URL, nil, "rm", dir+"/nope"), 1, "not found")
	if r := ctl(t, s.URL, nil, "rm", "-f", dir+"/nope"); r.code != 0 {
		t.Fatalf("rm -f missing: %+v", r)
	}
	if r := ctl(t, s.URL, nil, "rm", "-r", dir+"/x"); r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if _, err := os.Stat(dir + "/x"); !os.IsNotExist(err) {
		t.Fatal("rm -r left", dir+"/x")
	}
	oneLineError(t, ctl(t, s.URL, nil, "stat", dir+"/x"), 1, "not found")
	oneLineError(t, ctl(t, s.URL, nil, "ls", "--bogus"), 2, "flag provided but not defined")
	oneLineError(t, ctl(t, s.URL, nil, "frobnicate"), 2, "unknown command")
	oneLineError(t, ctl(t, s.URL, nil, "--nosuchflag", "ls"), 2, "flag provided but not defined")
}

func TestWatch(t *testing.T) {
	s := envdtest.Start(t)
	dir := t.TempDir()
	cmd := exec.Command(envdctlBin, "--url", s.URL, "--json", "watch", "-r", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(out)
	// The watch starts asynchronously: write until the first event arrives.
	events := make(chan client.FSEvent, 100)
	go func() {
		for {
			var ev client.FSEvent
			if dec.Decode(&ev) != nil {
				return
			}
			events <- ev
		}
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var got client.FSEvent
wait:
	for {
		select {
		case got = <-events:
			break wait
		case <-tick.C:
			os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
		}
	}
	if got.Name != "f" || got.Entry == nil || got.Entry.Path != filepath.Join(dir, "f") {
		t.Fatalf("event %+v", got)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := waitOrKill(t, cmd); err != nil {
		t.Fatalf("watch after Ctrl-C: %v", err)
	}
	oneLineError(t, ctl(t, s.URL, nil, "watch", dir+"/missing"), 1, "not found")
}

func TestProcessesInitHealth(t *testing.T) {
	s := envdtest.Start(t)
	ctx := context.Background()
	c := s.NewClient(t)
	if r := ctl(t, s.URL, nil, "health"); r.code != 0 || r.stdout != "0.7.0\n" {
		t.Fatalf("health: %+v", r)
	}
	if r := ctl(t, s.URL, nil, "health", "--wait", "10s"); r.code != 0 || r.stdout != "0.7.0\n" {
		t.Fatalf("health --wait: %+v", r)
	}
	p, err := c.Start(ctx, client.Cmd{Cmd: "sleep", Args: []string{"1000"}, Tag: "napper"})
	if err != nil {
		t.Fatal(err)
	}
	r := ctl(t, s.URL, nil, "ps", "--json")
	var ps []struct {
		PID  uint32   `json:"pid"`
		Tag  string   `json:"tag"`
		Cmd  string   `json:"cmd"`
		Args []string `json:"args"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &ps); err != nil || len(ps) != 1 || ps[0].PID != p.PID || ps[0].Tag != "napper" || ps[0].Cmd != "sleep" {
		t.Fatalf("ps --json: %v, %+v", err, r)
	}
	if r := ctl(t, s.URL, nil, "ps"); !strings.Contains(r.stdout, fmt.Sprintf("%d  napper  sleep 1000", p.PID)) {
		t.Fatalf("ps: %q", r.stdout)
	}
	if r := ctl(t, s.URL, nil, "kill", "-s", "KILL", "@napper"); r.code != 0 {
		t.Fatalf("kill: %+v", r)
	}
	x, err := p.Wait(nil, nil)
	if err != nil || x.ShellCode() != 137 {
		t.Fatalf("after kill -s KILL: %+v, %v", x, err)
	}
	oneLineError(t, ctl(t, s.URL, nil, "kill", "@napper"), 1, "not found")
	oneLineError(t, ctl(t, s.URL, nil, "kill", "-s", "BOGUS", "1"), 2, "unknown signal")
	oneLineError(t, ctl(t, s.URL, nil, "kill", "abc"), 2, "PID or @TAG")

	// init sets the defaults and a token; then the token is needed.
	if r := ctl(t, s.URL, nil, "init", "--env", "X=y", "--workdir", "/tmp", "--token", "sekrit"); r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	oneLineError(t, ctl(t, s.URL, nil, "ps"), 1, "unauthenticated")
	if r := ctl(t, s.URL, nil, "--token", "sekrit", "run", "--", "sh", "-c", "echo $X; pwd"); r.code != 0 || r.stdout != "y\n/tmp\n" {
		t.Fatalf("after init: %+v", r)
	}
	oneLineError(t, ctl(t, s.URL, nil, "--token", "sekrit", "--user", "nosuchuser", "ps"), 1, "unauthenticated")
	oneLineError(t, ctl(t, "http://127.0.0.1:1", nil, "health"), 1, "cannot reach envd")
	oneLineError(t, ctl(t, "nourl", nil, "health"), 2, "--url")
}
