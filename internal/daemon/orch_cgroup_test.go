package daemon_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/cgroup"
	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/envdtest"
	"github.com/envd-dev/envd/internal/testkit"
)

// innerRootEnv hands the cgroup root to the re-executed test binary, which
// runs TestEnvdInItsOwnCgroupInner from inside <root>/envd.
const innerRootEnv = "ENVD_ORCH_INNER_ROOT"

// TestEnvdInItsOwnCgroup runs a real daemon in a process that starts inside
// <root>/envd, as envd runs in a VM, so /freeze?mode=hierarchy sweeps
// everything beside it. If the sweep froze envd itself the inner test would
// hang; the outer one then thaws it and fails.
func TestEnvdInItsOwnCgroup(t *testing.T) {
	if os.Getenv(innerRootEnv) != "" {
		t.Skip("the outer half; this process is the inner one")
	}
	root := testkit.CgroupDir(t, "envd-own-cgroup-test-")
	self := filepath.Join(root, "envd")
	if err := os.Mkdir(self, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(self, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestEnvdInItsOwnCgroupInner$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), innerRootEnv+"="+root)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	cmd.Cancel = func() error {
		_ = cgroup.SetFreeze(self, false) // a frozen process would never die of the kill
		return cmd.Process.Kill()
	}
	out, err := cmd.CombinedOutput()
	t.Logf("inner test:\n%s", out)
	if ctx.Err() != nil {
		t.Fatal("inner test hung: envd froze itself")
	}
	if err != nil {
		t.Fatalf("inner test failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestEnvdInItsOwnCgroupInner") {
		t.Fatal("inner test did not run")
	}
}

func TestEnvdInItsOwnCgroupInner(t *testing.T) {
	root := os.Getenv(innerRootEnv)
	if root == "" {
		t.Skip("runs only inside the cgroup TestEnvdInItsOwnCgroup creates")
	}
	for _, rel := range []string{"app", "docker", "system.slice/systemd-journald.service", "system.slice/cron.service"} {
		if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := cgroup.SetFreeze(filepath.Join(root, "docker"), true); err != nil { // docker pause
		t.Fatal(err)
	}
	s := envdtest.Start(t, func(c *config.Config) {
		c.NoCgroups = false
		c.CgroupRoot = root
	})

	resp, body := orchPost(t, s, "/freeze?mode=hierarchy&maxWaitMs=30000", "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("/freeze = %d %q", resp.StatusCode, body)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatal(err)
	}
	// Root: app docker envd ptys system.slice user; system.slice: cron,
	// journald. Written: user ptys app cron; docker is the guest's.
	if res["mode"] != "hierarchy" || res["visited"] != 8.0 || res["allowlisted"] != 1.0 || res["preFrozen"] != 1.0 ||
		res["requested"] != 4.0 || res["frozen"] != 4.0 || res["failed"] != 0.0 {
		t.Errorf("/freeze = %s", body)
	}
	for rel, want := range map[string]bool{"envd": false, "system.slice": false, "system.slice/systemd-journald.service": false,
		"app": true, "user": true, "ptys": true, "system.slice/cron.service": true, "docker": true} {
		if got := frozenReq(t, filepath.Join(root, rel)); got != want {
			t.Errorf("%s frozen = %v, want %v", rel, got, want)
		}
	}
	// envd answers, and runs the orchestrator's reclaim shell, while the
	// rest is frozen.
	if r, err := s.Client.Get(s.URL + "/health"); err != nil || r.StatusCode != 200 {
		t.Fatalf("/health while frozen: %v %v", r, err)
	} else {
		r.Body.Close()
	}
	if out := runTagged(t, s, "", "_system", "cat /proc/self/cgroup"); !strings.Contains(out, "/envd\n") {
		t.Errorf("_system process runs in %q, want envd's cgroup", out)
	}

	resp, _ = orchPost(t, s, "/init", "", "")
	if resp.StatusCode != 204 {
		t.Fatalf("/init = %d", resp.StatusCode)
	}
	var audit map[string]any
	if err := json.Unmarshal([]byte(resp.Header.Get("X-Envd-Freeze-Audit")), &audit); err != nil {
		t.Fatalf("X-Envd-Freeze-Audit %q: %v", resp.Header.Get("X-Envd-Freeze-Audit"), err)
	}
	// 8 cgroups read; frozen unprotected: app docker ptys user cron = 5.
	if audit["visited"] != 8.0 || audit["frozen"] != 5.0 || audit["escaped"] != 0.0 || audit["violations"] != 0.0 || audit["truncated"] != false {
		t.Errorf("audit = %v", audit)
	}
	for rel, want := range map[string]bool{"app": false, "user": false, "ptys": false, "system.slice/cron.service": false, "docker": true} {
		if got := frozenReq(t, filepath.Join(root, rel)); got != want {
			t.Errorf("after /init: %s frozen = %v, want %v", rel, got, want)
		}
	}
}
