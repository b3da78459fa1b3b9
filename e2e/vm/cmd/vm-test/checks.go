package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/e2e/vm"
	"github.com/envd-dev/envd/internal/gen/process"
)

// consoleLog is envd's JSON log lines from the serial console, in order
// (envd writes to /dev/console; kernel lines are skipped).
func (s *suite) consoleLog() []map[string]any { return consoleLines(s.m.Console) }

func consoleLines(path string) []map[string]any {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if i := strings.IndexByte(string(line), '{'); i >= 0 {
			var m map[string]any
			if json.Unmarshal(line[i:], &m) == nil && m["msg"] != nil {
				out = append(out, m)
			}
		}
	}
	return out
}

func logIndex(lines []map[string]any, msg, step string) int {
	for i, m := range lines {
		if m["msg"] == msg && (step == "" || m["step"] == step) {
			return i
		}
	}
	return -1
}

// eventually polls f every interval until it returns true or d passes.
func eventually(ctx context.Context, d, interval time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(d)
	var last error
	for {
		ok, err := f()
		if ok {
			return nil
		}
		last = err
		if time.Now().After(deadline) || ctx.Err() != nil {
			if last == nil {
				last = errors.New("condition not met")
			}
			return fmt.Errorf("after %s: %w", d, last)
		}
		time.Sleep(interval)
	}
}

// pid1: envd is PID 1, its boot steps did the mounts, no other init runs.
func (s *suite) pid1(ctx context.Context) (string, error) {
	exe, err := s.c.Output(ctx, "root", "readlink /proc/1/exe")
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(exe) != "/usr/local/bin/envd" {
		return "", fmt.Errorf("/proc/1/exe is %q, want /usr/local/bin/envd", strings.TrimSpace(exe))
	}
	mi, err := s.c.Output(ctx, "root", "cat /proc/1/mountinfo")
	if err != nil {
		return "", err
	}
	got := map[string]string{}
	for line := range strings.Lines(mi) {
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if ok && len(f) >= 5 {
			got[f[4]] = strings.Fields(post)[0]
		}
	}
	log := s.consoleLog()
	var problems []string
	want := []string{"/proc", "proc", "/sys", "sysfs", "/dev", "devtmpfs", "/dev/pts", "devpts", "/dev/shm", "tmpfs", "/sys/fs/cgroup", "cgroup2", "/tmp", "tmpfs"}
	for i := 0; i < len(want); i += 2 {
		dir, fstype := want[i], want[i+1]
		if got[dir] != fstype {
			problems = append(problems, fmt.Sprintf("%s is %q, want %s", dir, got[dir], fstype))
		}
		if logIndex(log, "boot step done", "mount "+dir) < 0 {
			problems = append(problems, fmt.Sprintf("no 'boot step done' for mount %s in envd's log (someone else mounted it)", dir))
		}
	}
	// A kernel gives init 1024 open files; envd raises its own limit.
	lim, err := s.c.Output(ctx, "root", "awk '/^Max open files/ {print $4}' /proc/1/limits")
	if err != nil {
		return "", err
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(lim)); n < 65536 {
		problems = append(problems, fmt.Sprintf("envd's open-file limit is %q, want it raised (≥ 65536)", strings.TrimSpace(lim)))
	}
	if got["/"] != "ext4" {
		problems = append(problems, fmt.Sprintf("/ is %q, want the ext4 disk", got["/"]))
	}
	// Every user-space process: envd and this check's own python.
	ps, err := s.c.Run(ctx, "root", "/usr/bin/python3", "-c", `
import os
for p in os.listdir("/proc"):
    if not p.isdigit(): continue
    try: st = open("/proc/%s/stat" % p).read()
    except OSError: continue
    comm = st[st.index("(")+1:st.rindex(")")]
    ppid = int(st[st.rindex(")")+2:].split()[1])
    if p == "2" or ppid == 2: continue  # kernel threads
    print(p, ppid, comm)
`)
	if err == nil {
		err = ps.OK()
	}
	if err != nil {
		return "", fmt.Errorf("list processes: %w", err)
	}
	var others []string
	for line := range strings.Lines(ps.Stdout) {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		switch {
		case f[0] == "1" && f[2] == "envd":
		case f[0] == strconv.Itoa(int(ps.Pid)) && f[1] == "1":
		default:
			others = append(others, strings.TrimSpace(line))
		}
	}
	if len(others) > 0 {
		problems = append(problems, fmt.Sprintf("other processes running: %q", others))
	}
	if len(problems) > 0 {
		return "", errors.New(strings.Join(problems, "; "))
	}
	return fmt.Sprintf("/proc/1/exe is envd; envd's boot steps mounted /proc /sys /dev /dev/pts /dev/shm /sys/fs/cgroup /tmp on the ext4 root and raised its open-file limit to %s; no other process but this check's", strings.TrimSpace(lim)), nil
}

// The runner's own total line, else the summary of node's spec reporter
// (summed over its phases).
var (
	suiteTotal  = regexp.MustCompile(`e2e/sdk-js: (\d+) tests, (\d+) passed, (\d+) failed, (\d+) cancelled, (\d+) skipped`)
	nodeSummary = regexp.MustCompile(`(?m)^\S+ (tests|pass|fail|cancelled|skipped|todo) (\d+)\s*$`)
)

func suiteCounts(out string) map[string]int {
	counts := map[string]int{}
	if m := suiteTotal.FindAllStringSubmatch(out, -1); len(m) > 0 {
		last := m[len(m)-1]
		for i, k := range []string{"tests", "pass", "fail", "cancelled", "skipped"} {
			counts[k], _ = strconv.Atoi(last[i+1])
		}
		return counts
	}
	for _, m := range nodeSummary.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[2])
		counts[m[1]] += n
	}
	return counts
}

// sdkE2E runs the project's SDK suite against the VM's envd.
func (s *suite) sdkE2E(ctx context.Context) (string, error) {
	if _, err := os.Stat(s.e2e); err != nil {
		return "", err
	}
	ms := s.e2eMS
	if ms == 0 {
		ms = 300000
		if s.accel.Name == "kvm" {
			ms = 90000
		}
	}
	logPath := s.work + "/sdk-e2e.log"
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	// The suite's lock: an old runner that ignores ENVD_URL creates the
	// host user `user` as every local run does.
	cmd := exec.CommandContext(ctx, "flock", "/tmp/envd-e2e.lock", s.e2e)
	cmd.Env = append(os.Environ(), "ENVD_URL="+s.m.URL, "E2E_TIMEOUT_MS="+strconv.Itoa(ms))
	cmd.Stdout, cmd.Stderr = logf, logf
	t0 := time.Now()
	runErr := cmd.Run()
	took := time.Since(t0).Round(time.Second)
	out, _ := os.ReadFile(logPath)
	counts := suiteCounts(string(out))
	// Proof that the suite talked to the VM: run.sh's /init set
	// E2E_INIT_ENV in this envd. (A runner that ignored ENVD_URL would
	// have tested a local daemon and passed.)
	reached := "the suite's /init set E2E_INIT_ENV in the VM"
	r, err := s.c.Sh(ctx, "root", `printf %s "$E2E_INIT_ENV"`)
	switch {
	case connect.CodeOf(err) == connect.CodeUnauthenticated:
		reached = "the suite's /init set an access token in the VM"
	case err != nil:
		return "", fmt.Errorf("after the suite: %w", err)
	case r.Stdout != "from-init":
		reached = ""
	}
	tail := lastLines(string(out), 25)
	switch {
	case runErr != nil:
		return "", fmt.Errorf("%s: %v after %s: %d of %d passed, %d failed (log %s)\n%s", s.e2e, runErr, took, counts["pass"], counts["tests"], counts["fail"], logPath, tail)
	case reached == "":
		return "", fmt.Errorf("%s passed, but never reached the VM (no /init of its arrived): it ignores ENVD_URL (log %s)", s.e2e, logPath)
	case counts["pass"] == 0 || counts["pass"] != counts["tests"]:
		// Skipped counts too: in the VM every test must run.
		return "", fmt.Errorf("%s: %d of %d passed, %d failed, %d cancelled, %d skipped (log %s)\n%s", s.e2e, counts["pass"], counts["tests"], counts["fail"], counts["cancelled"], counts["skipped"], logPath, tail)
	}
	return fmt.Sprintf("%d of %d SDK tests passed through %s in %s (E2E_TIMEOUT_MS=%d; %s)", counts["pass"], counts["tests"], s.m.URL, took, ms, reached), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// mmds: the ids from the host's MMDS reach /run and the env; /init checks
// the token against the MMDS hash.
func (s *suite) mmdsCheck(ctx context.Context) (string, error) {
	files := "/run/wrenn/.WRENN_SANDBOX_ID /run/wrenn/.WRENN_TEMPLATE_ID /run/e2b/.E2B_SANDBOX_ID /run/e2b/.E2B_TEMPLATE_ID /run/wrenn/.WRENN_SANDBOX /run/e2b/.E2B_SANDBOX"
	read := func(ctx context.Context) (string, error) {
		return s.c.Output(ctx, "root", `for f in `+files+`; do printf '%s ' "$(cat $f)"; done; printf '%s %s' "$E2B_SANDBOX_ID" "$WRENN_TEMPLATE_ID"`)
	}
	id0, env0 := s.md["instanceID"].(string), s.md["envID"].(string)
	token := "tok-" + randHex(16)
	id1 := "vmtest-" + randHex(6)
	md1 := map[string]any{"instanceID": id1, "envID": env0, "address": s.md["address"], "accessTokenHash": vm.TokenHash(token)}
	s.mmds.Set(md1)

	// Wrong and missing tokens are refused; the one whose hash MMDS holds is taken.
	for _, body := range []map[string]any{{"accessToken": "not-" + token}, {}} {
		code, msg, err := s.c.Init(ctx, body)
		if err != nil {
			return "", err
		}
		if code != http.StatusUnauthorized {
			return "", fmt.Errorf("/init %v with MMDS holding another token's hash: %d %q, want 401", body, code, msg)
		}
	}
	code, msg, err := s.c.Init(ctx, map[string]any{"accessToken": token, "defaultUser": "user", "defaultWorkdir": "/home/user"})
	if err != nil {
		return "", err
	}
	if code != http.StatusNoContent {
		return "", fmt.Errorf("/init with the token whose hash MMDS holds: %d %q, want 204", code, msg)
	}
	s.c.Token = token
	// Without it, RPCs are refused now.
	anon := vm.NewClient(s.m.URL)
	if _, err := anon.Sh(ctx, "root", "true"); connect.CodeOf(err) != connect.CodeUnauthenticated {
		return "", fmt.Errorf("Start without the token after /init set one: %v, want unauthenticated", err)
	}
	// /init re-reads MMDS: the new sandbox id reaches the files and env.
	want := strings.Join([]string{id1, env0, id1, env0, "true", "true", id1, env0}, " ")
	var got string
	if err := eventually(ctx, 60*time.Second, 500*time.Millisecond, func() (bool, error) {
		got, err = read(ctx)
		return strings.TrimSpace(got) == want, err
	}); err != nil {
		return "", fmt.Errorf("after /init: /run files and env %q, want %q (boot ids were %s/%s): %v", got, want, id0, env0, err)
	}

	// An authorised reset: MMDS holds the hash of "", /init without a token.
	md1["accessTokenHash"] = vm.TokenHash("")
	s.mmds.Set(md1)
	if code, msg, err := anon.Init(ctx, map[string]any{}); err != nil || code != http.StatusNoContent {
		return "", fmt.Errorf("reset /init without a token while MMDS holds hash(\"\"): %d %q %v, want 204", code, msg, err)
	}
	s.c.Token = ""
	if _, err := s.c.Output(ctx, "root", "true"); err != nil {
		return "", fmt.Errorf("Start without a token after the reset: %w", err)
	}
	return fmt.Sprintf("boot ids %s/%s and, after /init, %s in /run/wrenn, /run/e2b and the env; /init with a wrong or no token 401, with the MMDS-hashed token 204, reset with hash(\"\") 204", id0, env0, id1), nil
}

// portForward: a loopback-only server in the guest is reachable through
// the guest address while it runs, and not after.
func (s *suite) portForward(ctx context.Context) (string, error) {
	const guestPort = 18123
	hostPort, err := vm.FreePort()
	if err != nil {
		return "", err
	}
	if err := s.m.AddHostFwd(hostPort, guestPort); err != nil {
		return "", err
	}
	defer s.m.RemoveHostFwd(hostPort)
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := fmt.Sprintf("http://127.0.0.1:%d/", hostPort)
	get := func() (bool, error) {
		resp, err := hc.Get(url)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "Directory listing") {
			return false, fmt.Errorf("GET %s: %d %q", url, resp.StatusCode, trim(string(b)))
		}
		return true, nil
	}
	if ok, _ := get(); ok {
		return "", fmt.Errorf("%s answered before the server started", url)
	}
	srv, err := s.c.Start(ctx, "user", &process.StartRequest{Process: &process.ProcessConfig{
		Cmd: "/usr/bin/python3", Args: []string{"-m", "http.server", "--bind", "127.0.0.1", strconv.Itoa(guestPort)}, Cwd: ptr("/home/user")}})
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	if err := eventually(ctx, 60*time.Second, 250*time.Millisecond, get); err != nil {
		s.c.Signal(ctx, "user", srv.Pid, process.Signal_SIGNAL_SIGKILL)
		return "", fmt.Errorf("server on 127.0.0.1:%d in the guest never reachable through %s:%d: %w", guestPort, vm.GuestIP, guestPort, err)
	}
	up := time.Since(t0)
	listen, _ := s.c.Output(ctx, "root", fmt.Sprintf("ss -Hltn 'sport = :%d' | awk '{print $4}' | sort | tr '\\n' ' '", guestPort))
	if err := s.c.Signal(ctx, "user", srv.Pid, process.Signal_SIGNAL_SIGKILL); err != nil {
		return "", err
	}
	if _, err := srv.Wait(30 * time.Second); err != nil && !strings.Contains(err.Error(), "end event") {
		return "", err
	}
	t1 := time.Now()
	if err := eventually(ctx, 30*time.Second, 250*time.Millisecond, func() (bool, error) {
		ok, _ := get()
		return !ok, nil
	}); err != nil {
		return "", fmt.Errorf("%s still answers after the server exited: %w", url, err)
	}
	return fmt.Sprintf("python http.server on 127.0.0.1:%d in the guest answered on host :%d (hostfwd to %s) %.1fs after start; listeners %s; gone %.1fs after it exited",
		guestPort, hostPort, vm.GuestIP, up.Seconds(), strings.TrimSpace(listen), time.Since(t1).Seconds()), nil
}

func ptr[T any](v T) *T { return &v }

func trim(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// cgroups: each command in a group of its own (issue 13): PTYs in
// ptys/cmd-N, other processes in user/cmd-N, envd in envd, with the memory
// and cpu controllers on for those groups and the commands' groups.
func (s *suite) cgroups(ctx context.Context) (string, error) {
	pty, err := s.c.Start(ctx, "user", &process.StartRequest{Process: &process.ProcessConfig{Cmd: "/bin/sleep", Args: []string{"120"}},
		Pty: &process.PTY{Size: &process.PTY_Size{Cols: 80, Rows: 24}}})
	if err != nil {
		return "", err
	}
	defer s.c.Signal(ctx, "user", pty.Pid, process.Signal_SIGNAL_SIGKILL)
	plain, err := s.c.Start(ctx, "user", &process.StartRequest{Process: &process.ProcessConfig{Cmd: "/bin/sleep", Args: []string{"120"}}})
	if err != nil {
		return "", err
	}
	defer s.c.Signal(ctx, "user", plain.Pid, process.Signal_SIGNAL_SIGKILL)
	// Per line: the group, then its controllers (the shell's own is "self").
	out, err := s.c.Output(ctx, "root", fmt.Sprintf(`cd /sys/fs/cgroup
for p in %d %d 1 self; do g=$(sed -n 's/^0:://p' /proc/$p/cgroup); echo "$g | $(cat .$g/cgroup.controllers)"; done
echo "root: $(cat cgroup.subtree_control)"
for g in ptys user envd; do echo "$g: $(cat $g/cgroup.controllers) | subtree $(cat $g/cgroup.subtree_control 2>/dev/null) | cpu.weight=$(cat $g/cpu.weight) memory.high=$(cat $g/memory.high) memory.min=$(cat $g/memory.min)"; done`, pty.Pid, plain.Pid))
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 8 {
		return "", fmt.Errorf("unexpected output %q", out)
	}
	var problems []string
	hasBoth := func(what, ctrls, line string) {
		for _, c := range []string{"cpu", "memory"} {
			if !slices.Contains(strings.Fields(ctrls), c) {
				problems = append(problems, fmt.Sprintf("%s lacks the %s controller (%q)", what, c, line))
			}
		}
	}
	cmdGroup := regexp.MustCompile(`^/(ptys|user)/cmd-[0-9]+$`)
	var groups []string
	for i, want := range []string{"ptys", "user", "envd", "user"} {
		what := []string{"the PTY process", "the plain process", "envd", "a Start's shell"}[i]
		g, ctrls, _ := strings.Cut(lines[i], " | ")
		groups = append(groups, g)
		ok := g == "/"+want
		if want != "envd" {
			m := cmdGroup.FindStringSubmatch(g)
			ok = m != nil && m[1] == want
			want += "/cmd-N"
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("%s is in %q, want /%s", what, g, want))
			continue
		}
		hasBoth(what+"'s group "+g, ctrls, lines[i])
	}
	if len(problems) == 0 && (groups[0] == groups[3] || groups[1] == groups[3]) {
		problems = append(problems, fmt.Sprintf("two commands share a group: %q", groups))
	}
	for _, l := range lines[5:] {
		name, rest, _ := strings.Cut(l, ": ")
		ctrls, rest, _ := strings.Cut(rest, " | ")
		hasBoth(name, ctrls, l)
		if name != "envd" {
			// Their command children get the controllers from here.
			sub, _, _ := strings.Cut(strings.TrimPrefix(rest, "subtree "), " | ")
			hasBoth(name+"'s subtree_control", sub, l)
		}
	}
	if len(problems) > 0 {
		return "", errors.New(strings.Join(problems, "; "))
	}
	return fmt.Sprintf("PTY in %s, Start in %s, a Start's shell in %s, envd in %s, each command's group with cpu and memory; %s", groups[0], groups[1], groups[3], groups[2], strings.Join(lines[5:], "; ")), nil
}

// oom: a command allocating past what the user group may have is killed by
// the kernel's OOM killer while envd survives; then the Go OOM test of
// internal/cgroup, which skips on hosts without the memory controller.
func (s *suite) oom(ctx context.Context) (string, error) {
	count := func() (int, error) {
		out, err := s.c.Output(ctx, "root", "awk '$1 == \"oom_kill\" {print $2}' /proc/vmstat")
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(out))
	}
	before, err := count()
	if err != nil {
		return "", err
	}
	// The user group's limit as envd sized it (memory.high) made hard for
	// the hog: past memory.high alone the kernel throttles and thrashes the
	// page cache for minutes under TCG before the global OOM killer runs.
	high, err := s.c.Output(ctx, "root", "cat /sys/fs/cgroup/user/memory.high")
	if err != nil {
		return "", err
	}
	high = strings.TrimSpace(high)
	if _, err := s.c.Output(ctx, "root", "echo "+high+" >/sys/fs/cgroup/user/memory.max"); err != nil {
		return "", err
	}
	defer s.c.Output(context.WithoutCancel(ctx), "root", "echo max >/sys/fs/cgroup/user/memory.max")
	// MAP_POPULATE faults each 128 MiB in within one mmap call: the kernel
	// throttles a group over memory.high once per return to user space,
	// which page by page takes minutes under TCG.
	t0 := time.Now()
	hog, err := s.c.Run(ctx, "user", "/usr/bin/python3", "-c", `
import mmap, sys
print(open("/proc/self/cgroup").read().strip(), flush=True)
keep = []
for i in range(128):
    keep.append(mmap.mmap(-1, 128 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE))
    print((i + 1) * 128, "MiB", flush=True)
print("never killed")
sys.exit(3)
`)
	if err != nil {
		return "", fmt.Errorf("hog: %w", err)
	}
	hogTook := time.Since(t0)
	end := hog.End
	if end.GetExited() || end.GetStatus() != "signal: killed" {
		return "", fmt.Errorf("hog ended with %q (exited %v), want signal: killed; stdout tail %q", end.GetStatus(), end.GetExited(), lastLines(hog.Stdout, 2))
	}
	// The limit is on user; the hog runs in its own user/cmd-N below it.
	group, _, _ := strings.Cut(hog.Stdout, "\n")
	if !regexp.MustCompile(`^0::/user/cmd-[0-9]+$`).MatchString(group) {
		return "", fmt.Errorf("the hog ran in %q, want 0::/user/cmd-N under the limited user group", group)
	}
	group = strings.TrimPrefix(group, "0::")
	after, err := count()
	if err != nil {
		return "", fmt.Errorf("after the OOM kill: %w", err)
	}
	if after <= before {
		return "", fmt.Errorf("hog was SIGKILLed but /proc/vmstat oom_kill stayed at %d: not the OOM killer", after)
	}
	adj, err := s.c.Output(ctx, "root", "cat /proc/1/oom_score_adj")
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(adj) != "-1000" {
		return "", fmt.Errorf("envd's oom_score_adj is %q, want -1000", strings.TrimSpace(adj))
	}
	if code, _, err := s.c.Get(ctx, "/health"); err != nil || code != 200 {
		return "", fmt.Errorf("health after the OOM kill: %d %v", code, err)
	}
	peak := lastLines(strings.TrimSpace(hog.Stdout), 1)

	// The Go test that needs a memory controller, run as root in the guest.
	verdicts, note, err := s.guestGoTest(ctx, s.cgroupTest, "", "TestMemoryLimitOOMKill")
	if err != nil {
		return "", err
	}
	verdict := verdicts[0]
	return fmt.Sprintf("hog in %s killed by the OOM killer (%s, oom_kill %d→%d) at %s after %.1fs (user memory.max set to its memory.high %s); envd oom_score_adj -1000, healthy, next Start works; internal/cgroup tests as root in the VM: %s, %s",
		group, end.GetStatus(), before, after, peak, hogTook.Seconds(), strings.TrimSpace(high), strings.TrimSpace(verdict), note), nil
}

// putExecutable uploads the host file src to dst in the guest, mode 0755.
func (s *suite) putExecutable(ctx context.Context, src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	code, body, err := s.c.Upload(ctx, "root", dst, f)
	if err != nil || code != 200 {
		return fmt.Errorf("upload %s to %s: %d %q %v", src, dst, code, trim(body), err)
	}
	if out, err := s.c.Output(ctx, "root", "chmod 755 "+dst); err != nil {
		return fmt.Errorf("chmod 755 %s: %w (%s)", dst, err, trim(out))
	}
	return nil
}

// guestGoTest uploads a Go test binary built on the host (static) and runs
// it as root in the guest with -test.run, failing unless it exits 0 and
// every one of tests reports PASS (a SKIP there is a failure: the VM has
// what those tests need). It returns the tests' verdict lines and a note on
// the other tests that skipped.
func (s *suite) guestGoTest(ctx context.Context, bin, run string, tests ...string) ([]string, string, error) {
	name := filepath.Base(bin)
	if err := s.putExecutable(ctx, bin, "/root/"+name); err != nil {
		return nil, "", err
	}
	args := "-test.v -test.count=1"
	if run != "" {
		args += " -test.run '" + run + "'"
	}
	r, err := s.c.Sh(ctx, "root", "cd /root && ./"+name+" "+args+" 2>&1")
	if err != nil {
		return nil, "", fmt.Errorf("run %s: %w", name, err)
	}
	var verdicts []string
	failed := r.OK() != nil
	for _, t := range tests {
		v := regexp.MustCompile(`--- (PASS|FAIL|SKIP): ` + regexp.QuoteMeta(t) + `\b.*`).FindString(r.Stdout)
		if !strings.HasPrefix(v, "--- PASS") {
			failed = true
			if v == "" {
				v = "no verdict for " + t
			}
		}
		verdicts = append(verdicts, strings.TrimSpace(v))
	}
	if failed {
		return nil, "", fmt.Errorf("%s in the VM (%q): %s\n%s", name, verdicts, r.End.GetStatus(), lastLines(r.Stdout, 30))
	}
	var skipped []string
	for _, m := range regexp.MustCompile(`--- SKIP: (\S+)`).FindAllStringSubmatch(r.Stdout, -1) {
		skipped = append(skipped, m[1])
	}
	note := "none skipped"
	if len(skipped) > 0 {
		note = "skipped: " + strings.Join(skipped, ", ")
	}
	return verdicts, note, nil
}

// exitReports: the exit report tests of internal/envdapi that need the
// memory and cpu controllers (issue 13), as root in the VM.
func (s *suite) exitReports(ctx context.Context) (string, error) {
	tests := []string{"TestExitReportPeakMemory", "TestExitReportOOMKilled", "TestExitReportCPUFromCgroup"}
	verdicts, _, err := s.guestGoTest(ctx, s.envdapiTest, "TestExitReport(PeakMemory|OOMKilled|CPUFromCgroup)", tests...)
	if err != nil {
		return "", err
	}
	return "internal/envdapi as root in the VM: " + strings.Join(verdicts, "; "), nil
}

// orphans: a grandchild whose parent exited is reparented to envd and
// reaped by it.
func (s *suite) orphans(ctx context.Context) (string, error) {
	out, err := s.c.Output(ctx, "user", `sleep 3 >/dev/null 2>&1 </dev/null & echo $!`)
	if err != nil {
		return "", err
	}
	pid := strings.TrimSpace(out)
	if _, err := strconv.Atoi(pid); err != nil {
		return "", fmt.Errorf("orphan pid %q", out)
	}
	ppid, err := s.c.Output(ctx, "root", "awk '{print $4}' /proc/"+pid+"/stat")
	if err != nil {
		return "", fmt.Errorf("the orphan exited too soon: %w", err)
	}
	if strings.TrimSpace(ppid) != "1" {
		return "", fmt.Errorf("orphan %s has parent %q, want 1 (envd)", pid, strings.TrimSpace(ppid))
	}
	var state string
	if err := eventually(ctx, 30*time.Second, 500*time.Millisecond, func() (bool, error) {
		out, err := s.c.Output(ctx, "root", "awk '{print $3}' /proc/"+pid+"/stat 2>/dev/null || echo gone")
		state = strings.TrimSpace(out)
		return state == "gone", err
	}); err != nil {
		return "", fmt.Errorf("orphan %s still in state %q: %w", pid, state, err)
	}
	zombies, err := s.c.Output(ctx, "root", "ps -eo stat=,pid=,ppid=,comm= | awk '$1 ~ /^Z/'")
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(zombies) != "" {
		return "", fmt.Errorf("zombies left: %q", zombies)
	}
	return fmt.Sprintf("grandchild %s reparented to PID 1 (envd) when its shell exited, reaped when it ended; no zombie in ps", pid), nil
}

// clock: the VM booted a year in the past; /init's timestamp corrects it.
func (s *suite) clock(ctx context.Context) (string, error) {
	bootOff := s.bootGuest.Sub(s.bootHost)
	wantOff := -365 * 24 * time.Hour
	if d := bootOff - wantOff; d < -5*time.Minute || d > 5*time.Minute {
		return "", fmt.Errorf("guest clock at boot was %s off the host's, want about %s (-rtc base=%s)", bootOff.Round(time.Second), wantOff, s.rtcBase.Format(time.RFC3339))
	}
	code, msg, err := s.c.Init(ctx, map[string]any{"timestamp": time.Now().UTC().Format(time.RFC3339Nano)})
	if err != nil || code != http.StatusNoContent {
		return "", fmt.Errorf("/init with a timestamp: %d %q %v", code, msg, err)
	}
	out, err := s.c.Output(ctx, "root", "date +%s.%N")
	host := time.Now()
	if err != nil {
		return "", err
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		return "", fmt.Errorf("guest date %q", out)
	}
	guest := time.Unix(0, int64(f*1e9))
	off := guest.Sub(host)
	if off < -5*time.Second || off > 5*time.Second {
		return "", fmt.Errorf("after /init with the host's time the guest is %s off", off)
	}
	return fmt.Sprintf("guest booted %.1f days behind the host (RTC base %s); after /init's timestamp, date +%%s in a Start is %s off the host's", -bootOff.Hours()/24, s.rtcBase.Format("2006-01-02"), off.Round(time.Millisecond)), nil
}

// shutdown: Ctrl-Alt-Del from the VMM ends envd in order and the VM with it.
func (s *suite) shutdown(ctx context.Context) (string, error) {
	stream, err := s.c.Start(ctx, "user", &process.StartRequest{Process: &process.ProcessConfig{Cmd: "/bin/sleep", Args: []string{"600"}}})
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	if err := s.m.QMP.CtrlAltDel(); err != nil {
		return "", fmt.Errorf("send Ctrl-Alt-Del: %w", err)
	}
	var streamEnd, qemuEnd time.Duration
	select {
	case <-stream.Done():
		streamEnd = time.Since(t0)
	case <-s.m.Done():
	case <-time.After(30 * time.Second):
	}
	select {
	case <-s.m.Done():
		qemuEnd = time.Since(t0)
	case <-time.After(30*time.Second - time.Since(t0)):
		s.m.Kill()
		return "", fmt.Errorf("qemu still running 30s after Ctrl-Alt-Del\n%s", s.m.ConsoleTail(20))
	}
	if streamEnd == 0 {
		select {
		case <-stream.Done():
			return "", errors.New("the open stream ended only when qemu was gone, not before")
		default:
			return "", errors.New("the open stream never ended")
		}
	}
	log := s.consoleLog()
	order := []string{"shutdown: stop accepting, end streams", "shutdown: streams ended", "shutdown: process groups signalled", "shutdown: filesystems synced"}
	last := -1
	for _, msg := range order {
		i := logIndex(log, msg, "")
		if i <= last {
			return "", fmt.Errorf("envd's log has %q at %d after %d: want %q in order\n%s", msg, i, last, order, s.m.ConsoleTail(15))
		}
		last = i
	}
	console, _ := os.ReadFile(s.m.Console)
	if !strings.Contains(string(console), "Attempted to kill init! exitcode=0x00000000") {
		return "", fmt.Errorf("no clean exit of PID 1 on the console\n%s", s.m.ConsoleTail(15))
	}
	return fmt.Sprintf("after Ctrl-Alt-Del (QMP send-key) the open stream ended at %s, envd logged streams ended → process groups signalled → filesystems synced, exited 0, qemu gone at %s",
		streamEnd.Round(time.Millisecond), qemuEnd.Round(time.Millisecond)), nil
}
