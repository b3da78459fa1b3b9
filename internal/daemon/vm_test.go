package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envd-dev/envd/client"
	"github.com/envd-dev/envd/internal/cgroup"
	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/envdtest"
	"github.com/envd-dev/envd/internal/mmds/mmdstest"
	"github.com/envd-dev/envd/internal/testkit"
)

func hash(tok string) string {
	s := sha512.Sum512([]byte(tok))
	return hex.EncodeToString(s[:])
}

// startInVM runs the daemon as inside Firecracker (no --isnotfc) against a
// local MMDS, with /proc and /run redirected to temp dirs so it neither
// forwards this machine's ports nor writes the host's /run.
func startInVM(t *testing.T, md *mmdstest.Server) (*envdtest.Server, string) {
	t.Helper()
	procRoot, runDir := t.TempDir(), t.TempDir()
	for _, p := range []string{"net/tcp", "net/tcp6", "self/oom_score_adj"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(procRoot, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(procRoot, p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := envdtest.Start(t, func(c *config.Config) {
		c.IsNotFC = false
		c.NoCgroups = true
		c.MMDSAddress = md.URL
		c.ProcRoot = procRoot
		c.RunDir = runDir
	})
	return s, runDir
}

func post(t *testing.T, s *envdtest.Server, path, body string) (int, string) {
	t.Helper()
	resp, err := s.Client.Post(s.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func envs(t *testing.T, s *envdtest.Server) map[string]string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/envs", nil)
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestInitTokenCheckedAgainstMMDSHash(t *testing.T) {
	md := mmdstest.New(t, map[string]any{"instanceID": "sbx-1", "envID": "tmpl-1", "accessTokenHash": hash("right-token")})
	s, _ := startInVM(t, md)

	if code, body := post(t, s, "/init", `{"accessToken":"wrong-token"}`); code != http.StatusUnauthorized || !strings.Contains(body, "access token validation failed") {
		t.Fatalf("/init with a token not matching the MMDS hash = %d %q, want 401", code, body)
	}
	if code, body := post(t, s, "/init", `{"accessToken":"right-token"}`); code != http.StatusNoContent {
		t.Fatalf("/init with the token matching the MMDS hash = %d %q, want 204", code, body)
	}
	// The token is now set: a different one needs the hash, which it lacks.
	if code, _ := post(t, s, "/init", `{"accessToken":"another"}`); code != http.StatusUnauthorized {
		t.Fatalf("/init replacing the token without a matching hash = %d, want 401", code)
	}
	// An absent token is a reset, allowed only when MMDS holds hash("").
	if code, body := post(t, s, "/init", `{}`); code != http.StatusUnauthorized || !strings.Contains(body, "reset not authorized") {
		t.Fatalf("/init without token = %d %q, want 401 reset not authorized", code, body)
	}
	md.Set(map[string]any{"instanceID": "sbx-1", "accessTokenHash": hash("")})
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/init", nil)
	req.Header.Set("X-Access-Token", "right-token")
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("authorised reset = %d, want 204", resp.StatusCode)
	}
}

func TestMMDSIdentityPublished(t *testing.T) {
	md := mmdstest.New(t, map[string]any{"instanceID": "sbx-1", "envID": "tmpl-1"})
	md.FailNext(2)
	s, runDir := startInVM(t, md)
	testkit.Eventually(t, "sandbox id from the boot MMDS poll", func() bool { return envs(t, s)["WRENN_SANDBOX_ID"] == "sbx-1" })
	e := envs(t, s)
	for k, v := range map[string]string{"WRENN_SANDBOX": "true", "E2B_SANDBOX": "true", "E2B_SANDBOX_ID": "sbx-1", "WRENN_TEMPLATE_ID": "tmpl-1", "E2B_TEMPLATE_ID": "tmpl-1"} {
		if e[k] != v {
			t.Errorf("/envs %s = %q, want %q", k, e[k], v)
		}
	}
	for f, v := range map[string]string{"wrenn/.WRENN_SANDBOX": "true", "wrenn/.WRENN_SANDBOX_ID": "sbx-1", "e2b/.E2B_TEMPLATE_ID": "tmpl-1"} {
		if b, err := os.ReadFile(filepath.Join(runDir, f)); err != nil || string(b) != v {
			t.Errorf("%s = %q, %v; want %q", f, b, err, v)
		}
	}
	// After a restore the host writes a new id and calls /init.
	md.Set(map[string]any{"instanceID": "sbx-2", "envID": "tmpl-1"})
	if code, body := post(t, s, "/init", ""); code != http.StatusNoContent {
		t.Fatalf("/init = %d %q", code, body)
	}
	testkit.Eventually(t, "new sandbox id after /init re-poll", func() bool { return envs(t, s)["WRENN_SANDBOX_ID"] == "sbx-2" })
}

// rawGet sends one keep-alive GET on c and reads the whole response.
func rawGet(t *testing.T, c net.Conn, r *bufio.Reader, host, path string) *http.Response {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestSnapshotPrepareClosesIdleConnections(t *testing.T) {
	md := mmdstest.New(t, map[string]any{"instanceID": "sbx-1"})
	s, _ := startInVM(t, md)
	host := strings.TrimPrefix(s.URL, "http://")
	idle, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	ir := bufio.NewReader(idle)
	if resp := rawGet(t, idle, ir, host, "/health"); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("health = %d close=%v", resp.StatusCode, resp.Close)
	}

	resp, err := s.Client.Post(s.URL+"/snapshot/prepare", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || !resp.Close {
		t.Fatalf("/snapshot/prepare = %d close=%v, want 204 closing its connection", resp.StatusCode, resp.Close)
	}
	// The idle keep-alive connection was closed by the server.
	idle.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := ir.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection after prepare: read %v, %v; want EOF", n, err)
	}

	// The first request after the restore brings keep-alive back.
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cr := bufio.NewReader(c)
	if resp := rawGet(t, c, cr, host, "/health"); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("first health after restore = %d close=%v, want a kept-alive 200", resp.StatusCode, resp.Close)
	}
	if resp := rawGet(t, c, cr, host, "/health"); resp.StatusCode != 200 {
		t.Fatalf("second health on the same connection = %d", resp.StatusCode)
	}
}

// The sequences issue 10 names as bad input: a restore with no prepare
// before it (the first /health of a VM that was never prepared), /snapshot/prepare
// twice in a row, and /health between a prepare and the snapshot. Each gets a
// defined answer at once, and keep-alive comes back with the first /health.
func TestSnapshotPrepareOutOfOrder(t *testing.T) {
	md := mmdstest.New(t, map[string]any{"instanceID": "sbx-1"})
	s, _ := startInVM(t, md)
	host := strings.TrimPrefix(s.URL, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cr := bufio.NewReader(c)
	// No prepare: nothing to recover, a plain kept-alive 200.
	if resp := rawGet(t, c, cr, host, "/health"); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("health without a prepare = %d close=%v, want a kept-alive 200", resp.StatusCode, resp.Close)
	}
	for i := range 2 {
		resp, err := s.Client.Post(s.URL+"/snapshot/prepare", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("/snapshot/prepare #%d = %d, want 204", i+1, resp.StatusCode)
		}
	}
	// /health after the prepares, before any snapshot (or after a restore:
	// envd cannot tell them apart, and needs not): 200 on a new connection,
	// which stays open for the next request.
	c2, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	cr2 := bufio.NewReader(c2)
	for i := range 2 {
		if resp := rawGet(t, c2, cr2, host, "/health"); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("health #%d after two prepares = %d close=%v, want a kept-alive 200", i+1, resp.StatusCode, resp.Close)
		}
	}
}

// TestProcessesLandInCgroups starts processes over the wire with cgroups on
// (a fresh directory of the cgroup2 mount as --cgroup-root) and reads
// cgroup.procs of each group.
func TestProcessesLandInCgroups(t *testing.T) {
	testkit.RequireCgroup2(t)
	root := filepath.Join(testkit.CgroupMount, "envd-daemon-test-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, g := range cgroup.Groups() {
			os.Remove(filepath.Join(root, string(g)))
		}
		if err := os.Remove(root); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	s := envdtest.Start(t, func(c *config.Config) {
		c.NoCgroups = false
		c.CgroupRoot = root
	})
	c := s.NewClient(t)
	for _, tc := range []struct {
		group cgroup.Group
		pty   *client.Size
	}{
		{cgroup.User, nil},
		{cgroup.PTY, &client.Size{Cols: 80, Rows: 24}},
	} {
		p, err := c.Start(context.Background(), client.Cmd{Cmd: "/bin/sleep", Args: []string{"1000"}, PTY: tc.pty})
		if err != nil {
			t.Fatal(err)
		}
		pid := p.PID
		// Each command has a group of its own under its kind's group
		// (issue 13), holding exactly that process.
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(int(pid)), "cgroup"))
		if err != nil {
			t.Fatal(err)
		}
		var own string
		for l := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "0::"); ok {
				own = filepath.Join(testkit.CgroupMount, rest)
			}
		}
		if filepath.Dir(own) != filepath.Join(root, string(tc.group)) || !strings.HasPrefix(filepath.Base(own), "cmd-") {
			t.Errorf("pid %d in cgroup %q, want %s/cmd-*", pid, own, filepath.Join(root, string(tc.group)))
		}
		if b, err := os.ReadFile(filepath.Join(own, "cgroup.procs")); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(int(pid)) {
			t.Errorf("%s/cgroup.procs = %q (%v), want exactly pid %d", own, b, err, pid)
		}
		if err := c.Signal(context.Background(), client.PID(pid), client.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(nil, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// lockedBuffer collects log output written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPayloadsNeverLogged runs a daemon logging at debug level and moves
// marked bytes through stdin, stdout and an upload: none may reach the log.
func TestPayloadsNeverLogged(t *testing.T) {
	logs := &lockedBuffer{}
	s := envdtest.StartLogged(t, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), func(c *config.Config) { c.Verbose = true })
	ctx := t.Context()
	base := s.URL
	c := s.NewClient(t)

	const in, out, file = "PAYLOAD-IN-9c2e", "PAYLOAD-OUT-7f3a", "PAYLOAD-FILE-51d0"
	p, err := c.Start(ctx, client.Cmd{Cmd: "/bin/sh", Args: []string{"-c", "echo " + out + "; cat >/dev/null"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SendInput(ctx, []byte(in+"\n")); err != nil {
		t.Fatal(err)
	}
	sawOut := false
	for {
		ev, err := p.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.End != nil {
			break
		}
		if strings.Contains(string(ev.Stdout), out) {
			sawOut = true
			if err := p.CloseStdin(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !sawOut {
		t.Fatal("never saw the process output")
	}

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "payload.txt")
	io.WriteString(fw, file)
	mw.Close()
	path := filepath.Join(t.TempDir(), "payload.txt")
	resp, err := s.Client.Post(base+"/files?path="+path, mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload = %d", resp.StatusCode)
	}
	if got, _ := os.ReadFile(path); string(got) != file {
		t.Fatalf("uploaded file = %q", got)
	}

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	all := logs.String()
	if all == "" {
		t.Fatal("debug logging produced nothing; the test would prove nothing")
	}
	for _, p := range []string{in, out, file} {
		if strings.Contains(all, p) {
			t.Errorf("payload %q reached the log:\n%s", p, all)
		}
	}
}

// TestMemoryHogOOMKilled needs the memory controller in cgroup2; it puts a
// limit on the user group and starts a memory hog over the wire.
func TestMemoryHogOOMKilled(t *testing.T) {
	testkit.RequireCgroup2(t)
	const mount = testkit.CgroupMount
	ctrls, err := cgroup.Controllers(mount)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ctrls, "memory") {
		reason := fmt.Sprintf("memory controller not enabled in cgroup2 at %s (cgroup.controllers: %q)", mount, strings.Join(ctrls, " "))
		if mounts, _ := os.ReadFile("/proc/self/mounts"); slices.Contains(cgroup.V1Controllers(mounts), "memory") {
			reason += ": memory is bound to cgroup v1 on this machine"
		}
		t.Skip(reason)
	}
	if err := os.WriteFile(filepath.Join(mount, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(mount, "envd-daemon-oom-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, g := range cgroup.Groups() {
			os.Remove(filepath.Join(root, string(g)))
		}
		os.Remove(root)
	})
	s := envdtest.Start(t, func(c *config.Config) {
		c.NoCgroups = false
		c.CgroupRoot = root
	})
	user := filepath.Join(root, string(cgroup.User))
	if err := os.WriteFile(filepath.Join(user, "memory.max"), []byte(strconv.Itoa(64<<20)), 0); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(user, "memory.swap.max"), []byte("0"), 0)
	// The string doubles until the group's limit stops it.
	res, err := s.NewClient(t).Run(context.Background(), client.Cmd{Cmd: "/bin/sh", Args: []string{"-c", "x=0123456789abcdef; while :; do x=$x$x; done"}})
	if err != nil {
		t.Fatalf("no end event: %v", err)
	}
	if res.Exited || res.Status != "signal: killed" {
		t.Errorf("end %+v, want killed by a signal", res.Exit)
	}
	b, err := os.ReadFile(filepath.Join(user, "memory.events"))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := cgroup.ParseKeyed(b, "oom_kill"); err != nil || n < 1 {
		t.Errorf("user memory.events oom_kill = %d, %v; want ≥ 1", n, err)
	}
}

// A client that opened a connection and sent nothing must not hold shutdown:
// net/http alone waits 5 s for such a connection.
func TestShutdownDoesNotWaitForUnusedConnections(t *testing.T) {
	s := envdtest.Start(t)
	host := strings.TrimPrefix(s.URL, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Wait until the server has accepted it (a request on another
	// connection is answered only after the accept loop ran again).
	resp, err := s.Client.Get(s.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	stopped := make(chan error, 1)
	go func() { stopped <- s.Stop() }()
	// Shutdown closes it at once; left to net/http it would stay open for
	// 5 s, past this deadline (a functional bound, far from any timing noise).
	c.SetReadDeadline(time.Now().Add(2500 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("unused connection during shutdown: read gave %v, want EOF", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
