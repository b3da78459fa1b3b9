package upgrade_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	epb "github.com/envd-dev/envd/internal/gen/envd/v1"
	"github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
	upb "github.com/envd-dev/envd/internal/gen/upgrade"
	"github.com/envd-dev/envd/internal/testkit"
	"github.com/envd-dev/envd/internal/upgrade"
)

// sandbox is the real envd binary running in private mount and PID
// namespaces: /usr/bin is an overlay whose writes stay in the namespace (the
// fixed staging path /usr/bin/envd.next is never created on this machine)
// and /run is a tmpfs (the handover blob). The workload's cgroups live under
// a cgroup made for the test.
type sandbox struct {
	t      *testing.T
	dir    string
	cg     string // cgroup root given to envd
	url    string
	shell  *exec.Cmd // unshare; its child is the namespace's init
	http   *http.Client
	output *bytes.Buffer
}

const cgroupV2 = "/sys/fs/cgroup/unified"

func buildEnvd(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "envd")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/envd-dev/envd/cmd/envd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build envd: %v\n%s", err, out)
	}
	return bin
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("namespaces, overlay mounts and cgroups need root")
	}
	if _, err := os.Stat(filepath.Join(cgroupV2, "cgroup.subtree_control")); err != nil {
		t.Skipf("no writable cgroup v2 at %s: %v", cgroupV2, err)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed")
	}
	if fss, _ := os.ReadFile("/proc/filesystems"); !bytes.Contains(fss, []byte("\toverlay\n")) {
		t.Skip("the kernel has no overlay filesystem, which keeps /usr/bin/envd.next inside the namespace")
	}
}

// sandboxOpts prepare a sandbox for a handover boot.
type sandboxOpts struct {
	env    []string // added to the sandbox's environment
	blob   []byte   // put where the handover blob goes before envd starts
	frozen bool     // the workload cgroups exist and are frozen, as an upgrade leaves them
	args   []string // appended to envd's
}

// startSandbox runs bin in new namespaces.
func startSandbox(t *testing.T, bin string, o sandboxOpts) *sandbox {
	t.Helper()
	dir := t.TempDir()
	cg, err := os.MkdirTemp(cgroupV2, "envd-upgrade-test-")
	if err != nil {
		t.Fatal(err)
	}
	const port = 49983 // envd's own: the namespace has a network of its own
	blobFile := ""
	if o.blob != nil {
		blobFile = filepath.Join(dir, "blob.pb")
		if err := os.WriteFile(blobFile, o.blob, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if o.frozen {
		for _, g := range []string{"user", "ptys"} {
			if err := os.Mkdir(filepath.Join(cg, g), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(cg, g, "cgroup.freeze"), []byte("1"), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	script := `set -e
ip link set lo up
mkdir -p "$D/ov"
mount -t tmpfs tmpfs "$D/ov"
mkdir "$D/ov/upper" "$D/ov/work"
mount -t overlay overlay -o "lowerdir=/usr/bin,upperdir=$D/ov/upper,workdir=$D/ov/work" /usr/bin
mount -t tmpfs tmpfs /run
if [ -n "$BLOB" ]; then mkdir -p /run/e2b; cp "$BLOB" /run/e2b/envd-handover.pb; fi
set +e
"$ENVD" "$@"
echo "envd exited: $?"
`
	cmd := exec.Command("unshare", append([]string{"--mount", "--pid", "--net", "--fork", "--mount-proc", "--propagation", "private",
		"sh", "-c", script, "sh", "-isnotfc", "-port", strconv.Itoa(port), "-cgroup-root", cg}, o.args...)...)
	cmd.Env = append(append(os.Environ(), "D="+dir, "ENVD="+bin, "BLOB="+blobFile), o.env...)
	s := &sandbox{t: t, dir: dir, cg: cg, url: "http://127.0.0.1:" + strconv.Itoa(port), shell: cmd, output: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = s.output, s.output
	// No keep-alive: the swap resets every connection, and a stale pooled
	// one would fail the first request after it.
	s.http = &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return testkit.DialIn(fmt.Sprintf("/proc/%d/ns/net", s.initPid()), addr)
		},
	}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	s.waitHealthy()
	return s
}

// stop kills the namespace's init, which takes every process in it along,
// then removes the cgroups.
func (s *sandbox) stop() {
	for _, g := range []string{"user", "ptys"} {
		_ = os.WriteFile(filepath.Join(s.cg, g, "cgroup.freeze"), []byte("0"), 0)
	}
	if init := s.initPid(); init > 0 {
		_ = syscall.Kill(init, syscall.SIGKILL)
	}
	_ = s.shell.Wait()
	if err := removeCgroupTree(s.cg); err != nil {
		s.t.Error(err)
	}
	if s.t.Failed() {
		s.t.Logf("sandbox output:\n%s", s.output)
	}
}

// removeCgroupTree removes a cgroup and every cgroup below it, deepest
// first. The kernel empties a killed cgroup asynchronously, so each removal
// is retried for a while.
func removeCgroupTree(root string) error {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	slices.Reverse(dirs)
	for _, d := range dirs {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.Remove(d)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("remove cgroup %s: %w", d, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

func children(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

func (s *sandbox) initPid() int {
	if s.shell.Process == nil {
		return 0
	}
	if c := children(s.shell.Process.Pid); len(c) > 0 {
		return c[0]
	}
	return 0
}

// envdPid is envd's pid as this machine sees it: the namespace init's child.
func (s *sandbox) envdPid() int {
	if c := children(s.initPid()); len(c) > 0 {
		return c[0]
	}
	return 0
}

// nsPath is path as the namespace's envd sees it.
func (s *sandbox) nsPath(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", s.envdPid(), path)
}

func (s *sandbox) waitHealthy() {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := s.http.Get(s.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("envd not healthy: %v\n%s", err, s.output)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *sandbox) post(path string, header http.Header, body io.Reader, length int64) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, s.url+path, body)
	if err != nil {
		return nil, nil, err
	}
	req.ContentLength = length
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func (s *sandbox) mustPost(path string, body string, want int) *http.Response {
	s.t.Helper()
	resp, b, err := s.post(path, nil, strings.NewReader(body), int64(len(body)))
	if err != nil {
		s.t.Fatalf("POST %s: %v", path, err)
	}
	if resp.StatusCode != want {
		s.t.Fatalf("POST %s: %d %q, want %d", path, resp.StatusCode, b, want)
	}
	return resp
}

func (s *sandbox) procs() processconnect.ProcessClient {
	return processconnect.NewProcessClient(s.http, s.url)
}

func (s *sandbox) files() filesystemconnect.FilesystemClient {
	return filesystemconnect.NewFilesystemClient(s.http, s.url)
}

func (s *sandbox) freezeState(g string) string {
	b, err := os.ReadFile(filepath.Join(s.cg, g, "cgroup.freeze"))
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// stream is one Start or Connect stream, read in the background.
type stream struct {
	events chan *pb.ProcessEvent
	err    chan error
}

func follow[T interface{ GetEvent() *pb.ProcessEvent }](st interface {
	Receive() bool
	Msg() T
	Err() error
}) *stream {
	s := &stream{events: make(chan *pb.ProcessEvent, 1024), err: make(chan error, 1)}
	go func() {
		for st.Receive() {
			s.events <- st.Msg().GetEvent()
		}
		s.err <- st.Err()
		close(s.events)
	}()
	return s
}

// next waits for the next event of the stream.
func (s *stream) next(t *testing.T) *pb.ProcessEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatalf("stream ended: %v", <-s.err)
		}
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no event within 30 s")
	}
	return nil
}

// until reads output until it contains want, and returns it.
func (s *stream) until(t *testing.T, want string) string {
	t.Helper()
	var out []byte
	for !bytes.Contains(out, []byte(want)) {
		ev := s.next(t)
		switch e := ev.GetEvent().(type) {
		case *pb.ProcessEvent_Data:
			out = append(out, e.Data.GetStdout()...)
			out = append(out, e.Data.GetPty()...)
		case *pb.ProcessEvent_End:
			t.Fatalf("process ended (%v) before printing %q; got %q", e.End, want, out)
		}
	}
	return string(out)
}

// end reads until the end event.
func (s *stream) end(t *testing.T) *pb.ProcessEvent_EndEvent {
	t.Helper()
	for {
		if e, ok := s.next(t).GetEvent().(*pb.ProcessEvent_End); ok {
			return e.End
		}
	}
}

func startProc(t *testing.T, c processconnect.ProcessClient, ctx context.Context, req *pb.StartRequest) (*stream, uint32) {
	t.Helper()
	st, err := c.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	s := follow[*pb.StartResponse](st)
	pid := s.next(t).GetStart().GetPid()
	if pid == 0 {
		t.Fatal("no start event")
	}
	return s, pid
}

func connectProc(t *testing.T, c processconnect.ProcessClient, ctx context.Context, sel *pb.ProcessSelector) (*stream, uint32) {
	t.Helper()
	st, err := c.Connect(ctx, &pb.ConnectRequest{Process: sel})
	if err != nil {
		t.Fatal(err)
	}
	s := follow[*pb.ConnectResponse](st)
	pid := s.next(t).GetStart().GetPid()
	if pid == 0 {
		t.Fatalf("connect %v: no start event", sel)
	}
	return s, pid
}

func byPid(pid uint32) *pb.ProcessSelector {
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
}

func byTag(tag string) *pb.ProcessSelector {
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: tag}}
}

func sendStdin(t *testing.T, c processconnect.ProcessClient, pid uint32, b string) {
	t.Helper()
	_, err := c.SendInput(t.Context(), &pb.SendInputRequest{
		Process: byPid(pid), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte(b)}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func sendPTY(t *testing.T, c processconnect.ProcessClient, pid uint32, b string) {
	t.Helper()
	_, err := c.SendInput(t.Context(), &pb.SendInputRequest{
		Process: byPid(pid), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: []byte(b)}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// pendingEvent waits until the probe watcher saw name: by then the kernel
// has queued the event for every watcher of the directory.
func waitEvent(t *testing.T, c filesystemconnect.FilesystemClient, id, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.GetWatcherEvents(t.Context(), &filesystem.GetWatcherEventsRequest{WatcherId: id})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.GetEvents() {
			if ev.GetName() == name {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("watcher %s never saw %s", id, name)
}

// TestLiveUpgrade swaps a running envd for the real binary and checks that
// the workload survives it as §18.1 says.
func TestLiveUpgrade(t *testing.T) {
	requireRoot(t)
	bin := buildEnvd(t, t.TempDir())
	// The -cmd start command is re-adopted, never started a second time.
	const startCmd = "exec sleep 1000"
	// A log limit small enough for one process to overflow it.
	const logLimit = 1 << 20
	s := startSandbox(t, bin, sandboxOpts{args: []string{"-cmd", startCmd, "-output-log-size", strconv.Itoa(logLimit)}})
	pc := s.procs()

	// Before any /init: 409, nothing staged.
	resp, body, err := s.post("/upgrade", http.Header{"X-Envd-Upgrade-Bin": {upgrade.StagePath}}, strings.NewReader("x"), 1)
	if err != nil || resp.StatusCode != http.StatusConflict || string(body) != "envd not initialized\n" {
		t.Fatalf("upgrade before /init: %v %v %q", resp, err, body)
	}
	if r := s.mustPost("/init", "", http.StatusNoContent); r.Header.Get("X-Envd-Handover") != "" {
		t.Fatalf("X-Envd-Handover on a normal boot: %q", r.Header.Get("X-Envd-Handover"))
	}

	// The workload.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pipeOld, pipePid := startProc(t, pc, ctx, &pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "while read l; do echo got:$l; done"}},
		Tag:     ptr("pipe"),
	})
	ptyOld, ptyPid := startProc(t, pc, ctx, &pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: "/bin/sh", Envs: map[string]string{"PS1": "$ "}},
		Pty:     &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}},
		Tag:     ptr("term"),
	})
	sendPTY(t, pc, ptyPid, "echo pty-$((40+2))\n")
	ptyOld.until(t, "pty-42")
	done, _ := startProc(t, pc, ctx, &pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "echo done-out; exit 3"}},
		Tag:     ptr("done"),
	})
	if end := done.end(t); end.GetExitCode() != 3 {
		t.Fatalf("exit: %v", end)
	}
	// Output carried in the log: a writer that never stops, one that
	// overflowed its log (a gap), and the retained exit's.
	_, writerPid := startProc(t, pc, ctx, &pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", writerScript}},
		Tag:     ptr("writer"),
	})
	s.unfreezable(t, writerPid)
	s.waitWriter(t, time.Now())
	const seqN = 300000
	seq := seqOutput(seqN)
	startProc(t, pc, ctx, &pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "seq 1 " + strconv.Itoa(seqN) + "; exec sleep 1000"}},
		Tag:     ptr("gap"),
	})
	for tr := s.readLog(t, ref("gap"), epb.OutputStream_OUTPUT_STREAM_STDOUT); tr.end < uint64(len(seq)); tr = s.readLog(t, ref("gap"), epb.OutputStream_OUTPUT_STREAM_STDOUT) {
		time.Sleep(10 * time.Millisecond)
	}
	gap0 := s.readLog(t, ref("gap"), epb.OutputStream_OUTPUT_STREAM_STDOUT)
	if len(gap0.gaps) != 1 || gap0.start == 0 || gap0.gaps[0] != fmt.Sprintf("0+%d", gap0.start) || !bytes.Equal(gap0.data, seq[gap0.start:]) || len(gap0.data) > logLimit {
		t.Fatalf("overflowed log: gaps %v, %d bytes from %d of %d", gap0.gaps, len(gap0.data), gap0.start, len(seq))
	}
	done0 := s.readLog(t, ref("done"), epb.OutputStream_OUTPUT_STREAM_STDOUT)
	doneReport := s.exitReport(t, "done")
	if string(done0.data) != "done-out\n" || done0.exit == nil || doneReport.GetExitCode() != 3 || doneReport.GetStdoutBytes() != 9 || !proto.Equal(done0.exit, doneReport) {
		t.Fatalf("retained exit: output %q, report %v / %v", done0.data, done0.exit, doneReport)
	}

	fc := s.files()
	watched := filepath.Join(s.dir, "watched")
	if err := os.Mkdir(watched, 0o755); err != nil {
		t.Fatal(err)
	}
	newWatcher := func() string {
		r, err := fc.CreateWatcher(t.Context(), &filesystem.CreateWatcherRequest{Path: watched})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetWatcherId()
	}
	wid, probe := newWatcher(), newWatcher()
	if err := os.WriteFile(filepath.Join(watched, "before.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, fc, probe, "before.txt")

	// Bad inputs leave the old envd serving with its workload thawed.
	resp, body, err = s.post("/upgrade", http.Header{"X-Envd-Upgrade-Bin": {"/tmp/envd"}}, strings.NewReader("x"), 1)
	if err != nil || resp.StatusCode != http.StatusBadRequest || string(body) != "unsupported upgrade target\n" {
		t.Fatalf("wrong target: %v %v %q", resp, err, body)
	}
	corrupt := "this is not an executable"
	resp, body, err = s.post("/upgrade", http.Header{"X-Envd-Upgrade-Bin": {upgrade.StagePath}}, strings.NewReader(corrupt), int64(len(corrupt)))
	if err != nil || resp.StatusCode != http.StatusInternalServerError || !strings.HasPrefix(string(body), "execve /usr/bin/envd.next: ") {
		t.Fatalf("corrupt binary: %v %v %q", resp, err, body)
	}
	if st, err := os.Stat(s.nsPath(upgrade.StagePath)); err != nil || st.Mode().Perm() != 0o755 || st.Size() != int64(len(corrupt)) {
		t.Fatalf("staged file: %v %v", st, err)
	}
	if _, err := os.Stat(upgrade.StagePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the staging path escaped the namespace: %v", err)
	}
	if got := s.freezeState("user") + s.freezeState("ptys"); got != "00" {
		t.Fatalf("workload left frozen after a failed upgrade: %s", got)
	}
	sendStdin(t, pc, pipePid, "still-here")
	sendStdin(t, pc, pipePid, "\n")
	pipeOld.until(t, "got:still-here")
	// The aborted handover stopped and restarted the output readers.
	s.waitWriter(t, time.Now())

	// A process with a lifetime (Connect-Timeout-Ms): what is left of it
	// must count from the thaw, not run out while the workload is frozen.
	const lifetime = 1500 * time.Millisecond
	tctx, tcancel := context.WithTimeout(ctx, lifetime)
	defer tcancel()
	timedStart := time.Now()
	startProc(t, pc, tctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/sleep", Args: []string{"1000"}}, Tag: ptr("timed")})

	// The logs as the old image has them.
	writer0 := s.waitWriter(t, time.Now())
	pty0 := s.readLog(t, ref("term"), epb.OutputStream_OUTPUT_STREAM_PTY)
	pipe0 := s.readLog(t, ref("pipe"), epb.OutputStream_OUTPUT_STREAM_STDOUT)
	if !bytes.Contains(pty0.data, []byte("pty-42")) || string(pipe0.data) != "got:still-here\n" {
		t.Fatalf("logs before the swap: pty %q, pipe %q", pty0.data, pipe0.data)
	}

	// The swap. Success has no response: the connection just closes.
	oldPid := s.envdPid()
	swapStart := time.Now()
	s.swap(bin)
	swapEnd := time.Now() // the new image answers /health
	for _, old := range []*stream{pipeOld, ptyOld} {
		for range old.events {
		}
		if err := <-old.err; err == nil {
			t.Fatal("a stream of the old image ended cleanly; want it cut")
		}
	}
	if pid := s.envdPid(); pid != oldPid {
		t.Fatalf("envd pid %d after the upgrade, %d before", pid, oldPid)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", oldPid))
	if !bytes.HasSuffix(cmdline, []byte("\x00"+upgrade.ResumeFlag+"\x00")) {
		t.Fatalf("new image's command line %q", cmdline)
	}
	if _, err := os.Stat(s.nsPath("/run/" + upgrade.BlobName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("handover blob not deleted: %v", err)
	}

	// Before /init: frozen, and only /health and /init pass.
	if got := s.freezeState("user") + s.freezeState("ptys"); got != "11" {
		t.Fatalf("workload not frozen before the first /init: %s", got)
	}
	if _, err = pc.List(t.Context(), &pb.ListRequest{}); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("List before /init: %v", err)
	}
	resp, body, err = s.post("/envs", nil, nil, 0)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || string(body) != `{"code":401,"message":"envd not initialized"}`+"\n" {
		t.Fatalf("POST /envs before /init: %v %v %q", resp, err, body)
	}
	resp, body, err = s.post("/upgrade", nil, strings.NewReader(""), 0)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "envd not initialized") {
		t.Fatalf("upgrade before the new image's /init: %v %v %q", resp, err, body)
	}
	time.Sleep(time.Until(timedStart.Add(lifetime + 500*time.Millisecond))) // past the lifetime, still frozen
	r := s.mustPost("/init", "", http.StatusNoContent)
	initDone := time.Now()
	want := `{"failed":false,"procs":6,"procs_failed":0,"retained":1,"retained_failed":0,"watchers":2,"watchers_failed":0}`
	if got := r.Header.Get("X-Envd-Handover"); got != want {
		t.Fatalf("X-Envd-Handover %s, want %s", got, want)
	}
	if got := s.freezeState("user") + s.freezeState("ptys"); got != "00" {
		t.Fatalf("workload still frozen after /init: %s", got)
	}
	if r := s.mustPost("/init", "", http.StatusNoContent); r.Header.Get("X-Envd-Handover") != want {
		t.Fatalf("later /init lost X-Envd-Handover: %q", r.Header.Get("X-Envd-Handover"))
	}

	// Same processes, same configs.
	list, err := pc.List(t.Context(), &pb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, p := range list.GetProcesses() {
		line := fmt.Sprintf("%d:%s:%s:%q", p.GetPid(), p.GetTag(), p.GetConfig().GetCmd(), p.GetConfig().GetArgs())
		if p.GetTag() == "timed" || p.GetTag() == "startCmd" || p.GetTag() == "gap" {
			line = line[strings.Index(line, ":")+1:]
		}
		tags = append(tags, line)
	}
	slices.Sort(tags)
	wantTags := []string{
		fmt.Sprintf("%d:pipe:/bin/sh:%q", pipePid, []string{"-c", "while read l; do echo got:$l; done"}),
		fmt.Sprintf("%d:term:/bin/sh:%q", ptyPid, []string(nil)),
		"timed:/bin/sleep:[\"1000\"]",
		fmt.Sprintf("%d:writer:/bin/bash:%q", writerPid, []string{"-c", writerScript}),
		fmt.Sprintf("gap:/bin/sh:%q", []string{"-c", "seq 1 " + strconv.Itoa(seqN) + "; exec sleep 1000"}),
		fmt.Sprintf("startCmd:/bin/bash:%q", []string{"-l", "-c", startCmd}),
	}
	slices.Sort(wantTags)
	if !slices.Equal(tags, wantTags) {
		t.Fatalf("List after the upgrade %v, want %v", tags, wantTags)
	}

	// The logs: everything from offset 0 at the same offsets, the gap as
	// it was, what the writer printed during the swap (it sat in the pipe
	// while nobody read it) once, and what it printed after.
	writer1 := s.waitWriter(t, initDone)
	writer0.continuedBy(t, "writer", writer1)
	during, frozen := 0, 0
	for _, st := range writerLines(t, writer1.data) {
		if st.After(swapStart) && st.Before(swapEnd) {
			during++
		}
		if st.After(swapEnd) && st.Before(initDone) {
			frozen++
		}
	}
	if during == 0 || frozen == 0 {
		t.Fatalf("the writer logged %d lines printed during the swap, %d while the workload was frozen after it", during, frozen)
	}
	gap1 := s.readLog(t, ref("gap"), epb.OutputStream_OUTPUT_STREAM_STDOUT)
	gap0.continuedBy(t, "overflowed log", gap1)
	if len(gap1.data) != len(gap0.data) {
		t.Fatalf("overflowed log: %d bytes after the swap, %d before", len(gap1.data), len(gap0.data))
	}
	pty0.continuedBy(t, "pty", s.readLog(t, ref("term"), epb.OutputStream_OUTPUT_STREAM_PTY))
	pipe0.continuedBy(t, "pipe", s.readLog(t, ref("pipe"), epb.OutputStream_OUTPUT_STREAM_STDOUT))
	done1 := s.readLog(t, ref("done"), epb.OutputStream_OUTPUT_STREAM_STDOUT)
	done0.continuedBy(t, "retained exit", done1)
	sameReport(t, "retained exit's Read", doneReport, done1.exit)
	sameReport(t, "retained exit's Wait", doneReport, s.exitReport(t, "done"))

	// The pipe process, by tag: output and input.
	pipe, pid := connectProc(t, pc, ctx, byTag("pipe"))
	if pid != pipePid {
		t.Fatalf("tag pipe is pid %d, was %d", pid, pipePid)
	}
	sendStdin(t, pc, pipePid, "after-upgrade\n")
	pipe.until(t, "got:after-upgrade")

	// The PTY process, by pid: input, output, resize.
	term, _ := connectProc(t, pc, ctx, byPid(ptyPid))
	if _, err := pc.Update(t.Context(), &pb.UpdateRequest{
		Process: byPid(ptyPid), Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 100, Rows: 40}},
	}); err != nil {
		t.Fatal(err)
	}
	sendPTY(t, pc, ptyPid, "echo size=$(stty size)\n")
	term.until(t, "size=40 100")

	// The retained exit.
	d, _ := connectProc(t, pc, ctx, byTag("done"))
	if end := d.end(t); end.GetExitCode() != 3 || !end.GetExited() || end.GetStatus() != "exit status 3" || end.GetError() != "exit status 3" {
		t.Fatalf("retained exit after the upgrade: %v", end)
	}

	// The polling watcher: same id, the pending event first, then new ones.
	ev, err := fc.GetWatcherEvents(t.Context(), &filesystem.GetWatcherEventsRequest{WatcherId: wid})
	if err != nil {
		t.Fatal(err)
	}
	if evs := ev.GetEvents(); len(evs) == 0 || evs[0].GetName() != "before.txt" || evs[0].GetType() != filesystem.EventType_EVENT_TYPE_CREATE {
		t.Fatalf("watcher %s after the upgrade: %v", wid, evs)
	}
	if err := os.WriteFile(filepath.Join(watched, "after.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, fc, wid, "after.txt")

	// The lifetime ran out after the thaw: SIGKILL.
	tm, _ := connectProc(t, pc, ctx, byTag("timed"))
	if end := tm.end(t); end.GetStatus() != "signal: killed" {
		t.Fatalf("timed process ended with %v", end)
	}

	// A chained upgrade, from the image now running from the staging path.
	s.swap(bin)
	if pid := s.envdPid(); pid != oldPid {
		t.Fatalf("envd pid %d after the second upgrade, %d before", pid, oldPid)
	}
	cmdline, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", oldPid))
	if n := bytes.Count(cmdline, []byte(upgrade.ResumeFlag+"\x00")); n != 2 {
		t.Fatalf("command line after two upgrades %q", cmdline)
	}
	r = s.mustPost("/init", "", http.StatusNoContent)
	writer1.continuedBy(t, "writer after the second upgrade", s.waitWriter(t, time.Now()))
	sameReport(t, "retained exit after the second upgrade", doneReport, s.exitReport(t, "done"))
	want = `{"failed":false,"procs":5,"procs_failed":0,"retained":2,"retained_failed":0,"watchers":2,"watchers_failed":0}`
	if got := r.Header.Get("X-Envd-Handover"); got != want {
		t.Fatalf("X-Envd-Handover after the second upgrade %s, want %s", got, want)
	}
	list, err = pc.List(t.Context(), &pb.ListRequest{})
	if err != nil || len(list.GetProcesses()) != 5 {
		t.Fatalf("List after the second upgrade: %v %v", list, err)
	}
	pipe, _ = connectProc(t, pc, ctx, byPid(pipePid))
	sendStdin(t, pc, pipePid, "chained\n")
	pipe.until(t, "got:chained")
	term, _ = connectProc(t, pc, ctx, byTag("term"))

	// Re-adopted processes end with §8.1's end events.
	if _, err := pc.CloseStdin(t.Context(), &pb.CloseStdinRequest{Process: byPid(pipePid)}); err != nil {
		t.Fatal(err)
	}
	if end := pipe.end(t); end.GetExitCode() != 0 || !end.GetExited() || end.GetStatus() != "exit status 0" || end.Error != nil {
		t.Fatalf("re-adopted pipe process ended with %v", end)
	}
	if _, err := pc.SendSignal(t.Context(), &pb.SendSignalRequest{Process: byPid(ptyPid), Signal: pb.Signal_SIGNAL_SIGKILL}); err != nil {
		t.Fatal(err)
	}
	if end := term.end(t); end.GetExitCode() != -1 || end.GetExited() || end.GetStatus() != "signal: killed" || end.GetError() != "signal: killed" {
		t.Fatalf("re-adopted pty process ended with %v", end)
	}
}

// swap upgrades to bin and waits until the new image answers /health.
func (s *sandbox) swap(bin string) {
	s.t.Helper()
	img, err := os.ReadFile(bin)
	if err != nil {
		s.t.Fatal(err)
	}
	resp, body, err := s.post("/upgrade", http.Header{"X-Envd-Upgrade-Bin": {upgrade.StagePath}}, bytes.NewReader(img), int64(len(img)))
	if err == nil {
		s.t.Fatalf("upgrade answered %d %q; want the connection dropped", resp.StatusCode, body)
	}
	s.waitHealthy()
}

func ptr[T any](v T) *T { return &v }

// A handover boot whose blob cannot be used: a newer schema fails the
// handover (thawed at once, nothing adopted, failed:true); a missing blob
// adopts nothing and is no failure. Either way the gate holds until /init.
func TestLiveHandoverBlobRefused(t *testing.T) {
	requireRoot(t)
	bin := buildEnvd(t, t.TempDir())
	newer, err := proto.Marshal(&upb.HandoverState{Schema: upgrade.MaxSchema + 1, FromVer: "9.9.9",
		Processes: []*upb.HandoverProc{{Pid: 4242, StdoutFd: 200, StderrFd: 201, StdinFd: -1, TtyFd: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		blob []byte
		want string
	}{
		{"newer schema", newer, `{"failed":true,"procs":0,"procs_failed":0,"retained":0,"retained_failed":0,"watchers":0,"watchers_failed":0}`},
		{"no blob", nil, `{"failed":false,"procs":0,"procs_failed":0,"retained":0,"retained_failed":0,"watchers":0,"watchers_failed":0}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSandbox(t, bin, sandboxOpts{blob: tc.blob, frozen: true, args: []string{upgrade.ResumeFlag}})
			if got := s.freezeState("user") + s.freezeState("ptys"); got != "00" {
				t.Fatalf("workload frozen after a handover with nothing to keep: %s", got)
			}
			if _, err := os.Stat(s.nsPath("/run/" + upgrade.BlobName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("refused blob left behind: %v", err)
			}
			resp, body, err := s.post("/envs", nil, nil, 0)
			if err != nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("gate: %v %v %q", resp, err, body)
			}
			r := s.mustPost("/init", "", http.StatusNoContent)
			if got := r.Header.Get("X-Envd-Handover"); got != tc.want {
				t.Fatalf("X-Envd-Handover %s, want %s", got, tc.want)
			}
			list, err := s.procs().List(t.Context(), &pb.ListRequest{})
			if err != nil || len(list.GetProcesses()) != 0 {
				t.Fatalf("List after a refused handover: %v %v", list, err)
			}
		})
	}
}

// TestMain lets this test binary play the old envd of another origin
// (E2B's) inside a sandbox: see e2bOldEnvd.
func TestMain(m *testing.M) {
	if os.Getenv("ENVD_TEST_OLD_E2B") != "" {
		e2bOldEnvd()
	}
	os.Exit(m.Run())
}

// e2bOldEnvd does what E2B's envd does at a live upgrade, without any of
// our code: it starts a pipe process, leaves its pipes inheritable on the
// slots E2B uses (200, 201, 202), writes a HandoverState blob encoded by
// hand from the field numbers of §18.1, and execs the real envd (same PID)
// with -resume-handover. It never returns.
func e2bOldEnvd() {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "old e2b envd:", err)
		os.Exit(3)
	}
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	pid, err := syscall.ForkExec("/bin/sh", []string{"/bin/sh", "-c", "while read l; do echo e2b:$l; done"}, &syscall.ProcAttr{
		Files: []uintptr{inR.Fd(), outW.Fd(), errW.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		fail(err)
	}
	for slot, f := range map[int]*os.File{200: outR, 201: errR, 202: inW} {
		if err := unix.Dup3(int(f.Fd()), slot, 0); err != nil {
			fail(err)
		}
	}
	str := func(n protowire.Number, v string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, n, protowire.BytesType), v)
	}
	sub := func(n protowire.Number, parts ...[]byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, n, protowire.BytesType), bytes.Join(parts, nil))
	}
	num := func(n protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, n, protowire.VarintType), v)
	}
	minus1 := uint64(1<<64 - 1) // int32 −1 on the wire
	blob := bytes.Join([][]byte{
		num(1, 1), str(2, "0.6.13"),
		sub(3, num(1, uint64(pid)), str(2, "e2b"), num(3, 1), str(4, "user"),
			sub(5, str(1, "/bin/sh"), str(2, "-c"), str(2, "while read l; do echo e2b:$l; done")),
			num(6, 200), num(7, 201), num(8, 202), num(9, minus1), num(10, 0)),
		sub(4, num(1, 77777), str(2, "e2b-done"), num(3, 1),
			sub(4, num(1, protowire.EncodeZigZag(5)), num(2, 1), str(3, "exit status 5"), str(4, "exit status 5")),
			num(5, 20000)),
	}, nil)
	if err := os.MkdirAll("/run/e2b", 0o755); err != nil {
		fail(err)
	}
	if err := os.WriteFile("/run/e2b/envd-handover.pb", blob, 0o600); err != nil {
		fail(err)
	}
	bin := os.Getenv("ENVD_TEST_REAL")
	fail(syscall.Exec(bin, append(append([]string{bin}, os.Args[1:]...), "--resume-handover"), os.Environ()))
}

// A handover from E2B's envd: its blob and its inherited descriptors are
// taken over as ours are.
func TestLiveHandoverFromE2B(t *testing.T) {
	requireRoot(t)
	bin := buildEnvd(t, t.TempDir())
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := startSandbox(t, self, sandboxOpts{env: []string{"ENVD_TEST_OLD_E2B=1", "ENVD_TEST_REAL=" + bin}})
	r := s.mustPost("/init", "", http.StatusNoContent)
	want := `{"failed":false,"procs":1,"procs_failed":0,"retained":1,"retained_failed":0,"watchers":0,"watchers_failed":0}`
	if got := r.Header.Get("X-Envd-Handover"); got != want {
		t.Fatalf("X-Envd-Handover %s, want %s", got, want)
	}
	pc := s.procs()
	ctx := t.Context()
	p, pid := connectProc(t, pc, ctx, byTag("e2b"))
	sendStdin(t, pc, pid, "hello\n")
	p.until(t, "e2b:hello")
	d, _ := connectProc(t, pc, ctx, byTag("e2b-done"))
	if end := d.end(t); end.GetExitCode() != 5 || end.GetError() != "exit status 5" {
		t.Fatalf("E2B's retained exit: %v", end)
	}
	if _, err := pc.CloseStdin(ctx, &pb.CloseStdinRequest{Process: byPid(pid)}); err != nil {
		t.Fatal(err)
	}
	if end := p.end(t); end.GetExitCode() != 0 || end.GetStatus() != "exit status 0" {
		t.Fatalf("E2B's process ended with %v", end)
	}
}
