package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/e2e/vm"
	"github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
	"github.com/envd-dev/envd/internal/gen/process"
)

// diskFull: an upload into a full filesystem answers 507 and leaves the
// file's previous content.
func (s *suite) diskFull(ctx context.Context) (string, error) {
	df, err := s.c.Output(ctx, "root", `set -e
mkdir -p /mnt/small
mountpoint -q /mnt/small || mount -t tmpfs -o size=512k tmpfs /mnt/small
printf previous >/mnt/small/target
dd if=/dev/zero of=/mnt/small/fill bs=4k >/dev/null 2>&1 || true
df -k /mnt/small | awk 'NR == 2 {print $4 " KiB free"}'`)
	if err != nil {
		return "", err
	}
	defer s.c.Output(context.WithoutCancel(ctx), "root", "umount /mnt/small")
	data := make([]byte, 256<<10)
	rand.Read(data)
	code, body, err := s.c.Upload(ctx, "root", "/mnt/small/target", bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	if code != http.StatusInsufficientStorage {
		return "", fmt.Errorf("upload of 256 KiB into a full tmpfs: %d %q, want 507", code, trim(body))
	}
	got, err := s.c.Output(ctx, "root", "cat /mnt/small/target")
	if err != nil {
		return "", err
	}
	if got != "previous" {
		return "", fmt.Errorf("after the failed upload the file holds %q, want its previous content", trim(got))
	}
	if code, _, err := s.c.Get(ctx, "/health"); err != nil || code != 200 {
		return "", fmt.Errorf("health after the full disk: %d %v", code, err)
	}
	return fmt.Sprintf("upload into a full 512 KiB tmpfs (%s) answered 507 %q; the file kept its previous content; envd healthy", strings.TrimSpace(df), trim(oneLine(body))), nil
}

// snapshotRestore: state open before POST /snapshot/prepare and a QMP
// save, and how each part comes back in a new qemu resumed from the file.
func (s *suite) snapshotRestore(ctx context.Context) (string, error) {
	// A token the restore must replace, set like a control plane does.
	oldToken := "old-" + randHex(8)
	s.mmds.Set(map[string]any{"instanceID": s.md["instanceID"], "envID": s.md["envID"], "accessTokenHash": vm.TokenHash(oldToken)})
	if code, msg, err := s.c.Init(ctx, map[string]any{"accessToken": oldToken, "defaultUser": "user", "defaultWorkdir": "/home/user"}); err != nil || code != http.StatusNoContent {
		return "", fmt.Errorf("/init before the snapshot: %d %q %v", code, msg, err)
	}
	s.c.Token = oldToken

	counter, err := s.c.Start(ctx, "user", &process.StartRequest{Tag: ptr("counter"), Process: &process.ProcessConfig{
		Cmd: "/bin/bash", Args: []string{"-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.2; done"}}})
	if err != nil {
		return "", err
	}
	pty, err := s.c.Start(ctx, "user", &process.StartRequest{Process: &process.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-i"}},
		Pty: &process.PTY{Size: &process.PTY_Size{Cols: 80, Rows: 24}}})
	if err != nil {
		return "", err
	}
	if _, err := s.c.Output(ctx, "user", "mkdir -p /home/user/watched"); err != nil {
		return "", err
	}
	fs := filesystemconnect.NewFilesystemClient(s.c.HC, s.c.Base)
	oldWatch, err := fs.WatchDir(ctx, &filesystem.WatchDirRequest{Path: "/home/user/watched"})
	if err != nil {
		return "", err
	}
	oldWatchEnd := make(chan error, 1)
	go func() {
		for oldWatch.Receive() {
		}
		oldWatchEnd <- oldWatch.Err()
	}()
	const guestPort = 18124
	srv, err := s.c.Start(ctx, "user", &process.StartRequest{Process: &process.ProcessConfig{
		Cmd: "/usr/bin/python3", Args: []string{"-m", "http.server", "--bind", "127.0.0.1", strconv.Itoa(guestPort)}, Cwd: ptr("/home/user")}})
	if err != nil {
		return "", err
	}
	_ = srv
	if err := s.forwarded(ctx, guestPort, true); err != nil {
		return "", fmt.Errorf("before the snapshot: %w", err)
	}
	// An idle keep-alive connection, which prepare must close.
	idle, err := net.Dial("tcp", strings.TrimPrefix(s.m.URL, "http://"))
	if err != nil {
		return "", err
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /health HTTP/1.1\r\nHost: envd\r\nX-Access-Token: %s\r\n\r\n", oldToken)
	br := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		return "", fmt.Errorf("keep-alive /health: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	before, err := s.connectLines(ctx, "counter", 2)
	if err != nil {
		return "", fmt.Errorf("counter before: %w", err)
	}

	// Clear envd's referenced bits: what it touches from here to the first
	// Start after resume is smaps_rollup's Referenced then.
	const memFig = `awk '/^(Rss|Referenced):/ {printf "%s %s kB, ", $1, $2}' /proc/1/smaps_rollup; sed 's/.*) //' /proc/1/stat | awk '{print "minflt " $8 " majflt " $10}'`
	memBefore, err := s.c.Output(ctx, "root", "echo 1 >/proc/1/clear_refs && "+memFig)
	if err != nil {
		return "", fmt.Errorf("clear envd's referenced bits: %w", err)
	}
	code, msg, err := s.post(ctx, "/snapshot/prepare")
	if err != nil || code != http.StatusNoContent {
		return "", fmt.Errorf("POST /snapshot/prepare: %d %q %v", code, msg, err)
	}
	// A host agent may retry: a second prepare answers the same.
	if code, msg, err := s.post(ctx, "/snapshot/prepare"); err != nil || code != http.StatusNoContent {
		return "", fmt.Errorf("second POST /snapshot/prepare: %d %q %v", code, msg, err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("the idle keep-alive connection after prepare: %v, want closed by envd", err)
	}
	file := filepath.Join(s.work, "saved.state")
	saveTook, err := s.m.Save(file)
	if err != nil {
		return "", fmt.Errorf("save: %w", err)
	}
	st, _ := os.Stat(file)
	oldPort := s.m.Port
	if err := s.resume(file, "resumed"); err != nil {
		return "", err
	}
	s.saved = file
	t0 := time.Now()
	// The first /health: the host agent's call that runs the recovery.
	hc := &http.Client{Timeout: 30 * time.Second}
	var firstHealth time.Duration
	if err := eventually(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		resp, err := hc.Get(s.m.URL + "/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		firstHealth = time.Since(t0)
		return resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK, fmt.Errorf("status %d", resp.StatusCode)
	}); err != nil {
		return "", fmt.Errorf("first /health after resume: %w", err)
	}
	// Figures: the first Start after resume beside a warm one, and what
	// envd holds in memory then (what a resume from remote storage pays).
	t1 := time.Now()
	if r, err := s.c.Run(ctx, "root", "/bin/true"); err != nil || r.OK() != nil {
		return "", fmt.Errorf("first Start after resume: %v %v", err, r.OK())
	}
	firstStart := time.Since(t1) + firstHealth
	memAfter, err := s.c.Output(ctx, "root", memFig)
	if err != nil {
		return "", fmt.Errorf("envd's memory after resume: %w", err)
	}
	t2 := time.Now()
	if _, err := s.c.Run(ctx, "root", "/bin/true"); err != nil {
		return "", err
	}
	warmStart := time.Since(t2)
	rss, _ := s.c.Output(ctx, "root", "awk '/^VmRSS/ {print $2 \" \" $3}' /proc/1/status")
	if logIndex(s.consoleLog(), "resumed after restore", "") < 0 {
		// The log line may take a moment to reach the console file.
		time.Sleep(time.Second)
		if logIndex(s.consoleLog(), "resumed after restore", "") < 0 {
			return "", errors.New("no 'resumed after restore' in envd's log after the first /health")
		}
	}

	// The old streams ran over the old qemu's forwarded port: they end with an error.
	select {
	case err := <-oldWatchEnd:
		if err == nil {
			return "", errors.New("the WatchDir stream open across the snapshot ended without an error")
		}
	case <-time.After(30 * time.Second):
		return "", errors.New("the WatchDir stream open across the snapshot is still silent 30s after resume")
	}
	// Same process, same pid, new lines by tag.
	list, err := s.c.Process("user").List(ctx, &process.ListRequest{})
	if err != nil {
		return "", err
	}
	samePid := false
	for _, p := range list.GetProcesses() {
		if p.GetTag() == "counter" && p.GetPid() == counter.Pid {
			samePid = true
		}
	}
	if !samePid {
		return "", fmt.Errorf("no process tagged counter with pid %d after resume: %v", counter.Pid, list.GetProcesses())
	}
	after, err := s.connectLines(ctx, "counter", 2)
	if err != nil {
		return "", fmt.Errorf("Connect by tag after resume: %w", err)
	}
	if after[0] <= before[len(before)-1] {
		return "", fmt.Errorf("counter lines after resume %v do not follow %v", after, before)
	}
	// The PTY takes input.
	if err := s.ptyEcho(ctx, pty.Pid); err != nil {
		return "", fmt.Errorf("PTY after resume: %w", err)
	}
	// A new watch works (through the new qemu's port).
	if err := s.watchWorks(ctx, filesystemconnect.NewFilesystemClient(s.c.HC, s.c.Base)); err != nil {
		return "", fmt.Errorf("new WatchDir after resume: %w", err)
	}
	// The forwarded port answers again, through the new qemu.
	if err := s.forwarded(ctx, guestPort, true); err != nil {
		return "", fmt.Errorf("after resume: %w", err)
	}
	// A new /init: new token (its hash in MMDS, as after a restore), an hour later.
	newToken := "new-" + randHex(8)
	md := map[string]any{"instanceID": "restored-" + randHex(4), "envID": s.md["envID"], "accessTokenHash": vm.TokenHash(newToken)}
	s.mmds.Set(md)
	later := time.Now().Add(time.Hour)
	if code, msg, err := s.c.Init(ctx, map[string]any{"accessToken": newToken, "timestamp": later.UTC().Format(time.RFC3339Nano)}); err != nil || code != http.StatusNoContent {
		return "", fmt.Errorf("/init after resume: %d %q %v", code, msg, err)
	}
	s.c.Token = newToken
	out, err := s.c.Output(ctx, "root", "date +%s")
	if err != nil {
		return "", err
	}
	guest, _ := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if off := time.Unix(guest, 0).Sub(time.Now().Add(time.Hour)); off < -10*time.Second || off > 10*time.Second {
		return "", fmt.Errorf("guest clock after /init with host+1h is %s off it", off)
	}
	old := vm.NewClient(s.m.URL)
	old.Token = oldToken
	if _, err := old.Sh(ctx, "root", "true"); connect.CodeOf(err) != connect.CodeUnauthenticated {
		return "", fmt.Errorf("the old token after the new /init: %v, want unauthenticated", err)
	}
	s.c.Signal(ctx, "user", srv.Pid, process.Signal_SIGNAL_SIGKILL)
	s.c.Signal(ctx, "user", pty.Pid, process.Signal_SIGNAL_SIGKILL)
	s.c.Signal(ctx, "user", counter.Pid, process.Signal_SIGNAL_SIGKILL)
	return fmt.Sprintf("saved %.0f MiB in %s (host port %d → %d); first /health %s after cont, first Start of /bin/true ended %s after cont (a warm one: %s), envd VmRSS %s then; envd memory since clear_refs just before prepare: %s before → %s after the first /health and Start (Referenced: distinct memory envd touched, what a resume from remote storage pays); counter pid %d kept, lines %v → %v by tag; prepare twice 204; PTY echoes; old WatchDir ended with an error, a new one sees events; forwarded port answers; /init with a new token and +1h moved the clock, old token 401",
		float64(st.Size())/(1<<20), saveTook.Round(10*time.Millisecond), oldPort, s.m.Port, firstHealth.Round(10*time.Millisecond),
		firstStart.Round(time.Millisecond), warmStart.Round(time.Millisecond), strings.TrimSpace(rss), strings.TrimSpace(memBefore), strings.TrimSpace(memAfter), counter.Pid, before, after), nil
}

// resume starts the saved state in a new qemu on a new port and makes it
// the suite's VM.
func (s *suite) resume(file, name string) error {
	cfg := s.m.Cfg
	cfg.Port = 0
	cfg.WorkDir = filepath.Join(s.work, name)
	m, err := vm.StartSaved(cfg, file)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	s.m = m
	token := s.c.Token
	s.c = vm.NewClient(m.URL)
	s.c.Token = token
	return nil
}

// forwarded checks a guest loopback server through a new hostfwd.
func (s *suite) forwarded(ctx context.Context, guestPort int, want bool) error {
	hostPort, err := vm.FreePort()
	if err != nil {
		return err
	}
	if err := s.m.AddHostFwd(hostPort, guestPort); err != nil {
		return err
	}
	defer s.m.RemoveHostFwd(hostPort)
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := fmt.Sprintf("http://127.0.0.1:%d/", hostPort)
	return eventually(ctx, 60*time.Second, 250*time.Millisecond, func() (bool, error) {
		resp, err := hc.Get(url)
		if err != nil {
			return false, fmt.Errorf("127.0.0.1:%d in the guest through %s: %w", guestPort, url, err)
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("status %d", resp.StatusCode)
	})
}

func (s *suite) post(ctx context.Context, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.c.Base+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := s.c.HC.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// connectLines connects to the process by tag and returns the first n
// whole numbers it prints.
func (s *suite) connectLines(ctx context.Context, tag string, n int) ([]int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.c.Process("user").Connect(ctx, &process.ConnectRequest{Process: &process.ProcessSelector{Selector: &process.ProcessSelector_Tag{Tag: tag}}})
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var buf string
	var nums []int
	timer := time.AfterFunc(30*time.Second, cancel)
	defer timer.Stop()
	for stream.Receive() {
		buf += string(stream.Msg().GetEvent().GetData().GetStdout())
		for {
			line, rest, ok := strings.Cut(buf, "\n")
			if !ok {
				break
			}
			buf = rest
			if v, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
				nums = append(nums, v)
			}
		}
		// The first line may be cut: use only lines after it.
		if len(nums) > n {
			return nums[1 : n+1], nil
		}
	}
	return nil, fmt.Errorf("stream ended after %v: %v", nums, stream.Err())
}

// ptyEcho types a command into the PTY and waits for its output.
func (s *suite) ptyEcho(ctx context.Context, pid uint32) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.c.Process("user").Connect(ctx, &process.ConnectRequest{Process: &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: pid}}})
	if err != nil {
		return err
	}
	defer stream.Close()
	marker := "pty-" + randHex(4)
	if _, err := s.c.Process("user").SendInput(ctx, &process.SendInputRequest{Process: &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: pid}},
		Input: &process.ProcessInput{Input: &process.ProcessInput_Pty{Pty: []byte("echo " + marker + "-$((6*7))\n")}}}); err != nil {
		return err
	}
	timer := time.AfterFunc(30*time.Second, cancel)
	defer timer.Stop()
	var out string
	for stream.Receive() {
		out += string(stream.Msg().GetEvent().GetData().GetPty())
		if strings.Contains(out, marker+"-42") {
			return nil
		}
	}
	return fmt.Errorf("no %s-42 in the PTY output %q: %v", marker, trim(out), stream.Err())
}

func (s *suite) watchWorks(ctx context.Context, fs filesystemconnect.FilesystemClient) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := fs.WatchDir(ctx, &filesystem.WatchDirRequest{Path: "/home/user/watched"})
	if err != nil {
		return err
	}
	defer w.Close()
	if !w.Receive() || w.Msg().GetStart() == nil {
		return fmt.Errorf("no start event: %v", w.Err())
	}
	name := "after-" + randHex(4)
	if _, err := s.c.Output(ctx, "user", "touch /home/user/watched/"+name); err != nil {
		return err
	}
	timer := time.AfterFunc(30*time.Second, cancel)
	defer timer.Stop()
	for w.Receive() {
		if ev := w.Msg().GetFilesystem(); ev != nil && strings.HasSuffix(ev.GetName(), name) {
			return nil
		}
	}
	return fmt.Errorf("no event for %s: %v", name, w.Err())
}

// restoreTwice: the saved state resumed twice, one clone after the other;
// each takes its own /init.
func (s *suite) restoreTwice(ctx context.Context) (string, error) {
	if s.saved == "" {
		return "", errors.New("no saved state (snapshot_restore did not get that far)")
	}
	var notes []string
	for i := 1; i <= 2; i++ {
		cfg := s.m.Cfg
		cfg.Port = 0
		cfg.WorkDir = filepath.Join(s.work, fmt.Sprintf("clone-%d", i))
		m, err := vm.StartSaved(cfg, s.saved)
		if err != nil {
			return "", fmt.Errorf("clone %d: %w", i, err)
		}
		err = func() error {
			defer m.Kill()
			took, err := m.WaitHealthy(ctx, 60*time.Second)
			if err != nil {
				return err
			}
			token := fmt.Sprintf("clone%d-%s", i, randHex(6))
			s.mmds.Set(map[string]any{"instanceID": fmt.Sprintf("clone-%d", i), "envID": s.md["envID"], "accessTokenHash": vm.TokenHash(token)})
			c := vm.NewClient(m.URL)
			if code, msg, err := c.Init(ctx, map[string]any{"accessToken": token, "envVars": map[string]string{"CLONE": strconv.Itoa(i)}}); err != nil || code != http.StatusNoContent {
				return fmt.Errorf("/init: %d %q %v", code, msg, err)
			}
			c.Token = token
			out, err := c.Output(ctx, "user", `printf '%s %s' "$CLONE" "$(cat /run/e2b/.E2B_SANDBOX_ID 2>/dev/null)"`)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(out, strconv.Itoa(i)+" ") {
				return fmt.Errorf("CLONE in clone %d is %q", i, out)
			}
			notes = append(notes, fmt.Sprintf("clone %d healthy %s after qemu start, CLONE=%s", i, took.Round(10*time.Millisecond), strings.Fields(out)[0]))
			return nil
		}()
		if err != nil {
			return "", fmt.Errorf("clone %d: %w", i, err)
		}
	}
	return strings.Join(notes, "; ") + "; each with its own token and env", nil
}

// memoryLimitRestore: the oom check on the restored VM.
func (s *suite) memoryLimitRestore(ctx context.Context) (string, error) {
	if s.saved == "" {
		return "", errors.New("not a restored VM (snapshot_restore did not get that far)")
	}
	return s.oom(ctx)
}

// processes10k: 10,000 live processes started through the API, all in List,
// then killed: no zombie and no fd left in envd. Each Start stream is
// dropped after its start event (the process lives on, §8.1), over one
// h2c connection, so the host's qemu does not hold 10,000 sockets. The
// sleeper is the host's static busybox: a dynamic /bin/sleep pays the
// loader and libc relocations on every exec, which dominate under TCG.
//
// It boots a VM of its own with -mem10k MiB (default 4096): each process
// costs the guest about 300 KiB with its cgroup and pipes (measured: a 3 GiB
// guest ran out of memory near 9,500), more than the suite's VM has, and a
// guest whose memory was touched that far would make the snapshots after
// it gigabytes instead of megabytes.
func (s *suite) processes10k(ctx context.Context) (string, error) {
	cfg := s.m.Cfg
	cfg.Port, cfg.Incoming, cfg.Disk = 0, "", ""
	cfg.MemMiB = s.mem10k
	cfg.WorkDir = filepath.Join(s.work, "processes-10k")
	m, err := vm.Start(cfg)
	if err != nil {
		return "", err
	}
	defer m.Kill()
	if _, err := m.WaitHealthy(ctx, 240*time.Second); err != nil {
		return "", fmt.Errorf("the %d MiB VM: %w", cfg.MemMiB, err)
	}
	sub := *s
	sub.m, sub.c = m, vm.NewClient(m.URL)
	// Its own token, as the host gives each VM: MMDS carries its hash
	// first, whatever token the suite's VM holds now.
	if _, err := sub.takeToken(ctx); err != nil {
		return "", fmt.Errorf("the %d MiB VM: %w", cfg.MemMiB, err)
	}
	detail, err := sub.processesN(ctx)
	return fmt.Sprintf("in a %d MiB VM: %s", cfg.MemMiB, detail), err
}

func (s *suite) processesN(ctx context.Context) (string, error) {
	n := s.procs
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("busybox (busybox-static) for the sleeper: %w", err)
	}
	if err := s.putExecutable(ctx, bb, "/usr/local/bin/sleep"); err != nil {
		return "", fmt.Errorf("busybox as the sleeper: %w", err)
	}
	if _, err := s.c.Output(ctx, "root", "/usr/local/bin/sleep 0"); err != nil {
		return "", fmt.Errorf("the busybox sleeper: %w", err)
	}
	fds := func() (int, error) {
		out, err := s.c.Output(ctx, "root", "ls /proc/1/fd | wc -l")
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(out))
	}
	baseFD, err := fds()
	if err != nil {
		return "", err
	}
	// What n processes, each with a cgroup of its own, cost the guest.
	avail := func() string {
		out, _ := s.c.Output(ctx, "root", "awk '/^MemAvailable/ {printf \"%d MiB\", $2/1024}' /proc/meminfo")
		return out
	}
	baseMem := avail()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	h2 := vm.NewClient(s.m.URL)
	h2.Token = s.c.Token
	h2.HC = &http.Client{Transport: roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		if h2.Token != "" {
			r = r.Clone(r.Context())
			r.Header.Set("X-Access-Token", h2.Token)
		}
		return tr.RoundTrip(r)
	})}
	pc := h2.Process("user")
	pids := make([]uint32, n)
	t0 := time.Now()
	const workers = 32
	errc := make(chan error, workers)
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range workers {
		go func() {
			for i := range next {
				sctx, cancel := context.WithCancel(ctx)
				stream, err := pc.Start(sctx, &process.StartRequest{Process: &process.ProcessConfig{Cmd: "/usr/local/bin/sleep", Args: []string{"6000"}, Cwd: ptr("/")}, Stdin: ptr(false)})
				if err == nil && !stream.Receive() {
					err = fmt.Errorf("no start event: %v", stream.Err())
				}
				if err == nil {
					pids[i] = stream.Msg().GetEvent().GetStart().GetPid()
				}
				cancel()
				if i > 0 && i%(n/10) == 0 {
					s.logf("processes_10k: %d started in %s", i, time.Since(t0).Round(time.Second))
				}
				if err != nil {
					errc <- fmt.Errorf("Start %d: %w", i, err)
					return
				}
			}
			errc <- nil
		}()
	}
	var firstErr error
	for range workers {
		if err := <-errc; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	startTook := time.Since(t0)
	defer s.c.Sh(context.WithoutCancel(ctx), "root", "pkill -KILL -x sleep")
	if firstErr != nil {
		return "", firstErr
	}
	want := map[uint32]bool{}
	for _, p := range pids {
		want[p] = true
	}
	list, err := pc.List(ctx, &process.ListRequest{})
	if err != nil {
		return "", err
	}
	listed := 0
	for _, p := range list.GetProcesses() {
		if want[p.GetPid()] {
			listed++
		}
	}
	if listed != n {
		return "", fmt.Errorf("List returned %d of the %d live processes (%d entries)", listed, n, len(list.GetProcesses()))
	}
	peakFD, err := fds()
	if err != nil {
		return "", err
	}
	peakMem := avail()
	t1 := time.Now()
	kill := make(chan uint32)
	go func() {
		defer close(kill)
		for _, p := range pids {
			kill <- p
		}
	}()
	for range workers {
		go func() {
			var e error
			for p := range kill {
				if _, err := pc.SendSignal(ctx, &process.SendSignalRequest{Process: &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: p}}, Signal: process.Signal_SIGNAL_SIGKILL}); err != nil && e == nil {
					e = fmt.Errorf("SendSignal %d: %w", p, err)
				}
			}
			errc <- e
		}()
	}
	for range workers {
		if err := <-errc; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	var left, zombies string
	var endFD int
	if err := eventually(ctx, 120*time.Second, time.Second, func() (bool, error) {
		l, err := pc.List(ctx, &process.ListRequest{})
		if err != nil {
			return false, err
		}
		still := 0
		for _, p := range l.GetProcesses() {
			if want[p.GetPid()] {
				still++
			}
		}
		left = strconv.Itoa(still)
		z, err := s.c.Output(ctx, "root", "ps -eo stat= | grep -c '^Z' || true")
		if err != nil {
			return false, err
		}
		zombies = strings.TrimSpace(z)
		if endFD, err = fds(); err != nil {
			return false, err
		}
		return still == 0 && zombies == "0" && endFD <= baseFD+8, fmt.Errorf("%s still listed, %s zombies, envd fds %d (before %d)", left, zombies, endFD, baseFD)
	}); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d busybox sleeps started in %s (%.0f/s), all %d in List, envd fds %d → %d → %d, guest MemAvailable %s → %s; SIGKILLed in %s: none listed, no zombie", n, startTook.Round(time.Second),
		float64(n)/startTook.Seconds(), listed, baseFD, peakFD, endFD, baseMem, peakMem, time.Since(t1).Round(time.Second)), nil
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
