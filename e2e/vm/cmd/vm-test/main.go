// Command vm-test boots one VM of the image scripts/vm-image built and runs
// the VM checks against envd as PID 1 of a real kernel, one
// "PASS|FAIL name: detail" line each, then "N passed, M failed". Run it
// through scripts/vm-test. See README.md, "Boot envd in a VM on this machine".
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/envd-dev/envd/e2e/vm"
)

type suite struct {
	m      *vm.Machine
	c      *vm.Client
	mmds   *vm.MMDS
	nfs    *nfsServer     // the volumes' server, for "nfs_volume"
	md     map[string]any // the metadata the VM booted with
	work   string
	e2e    string
	e2eMS  int
	accel  vm.Accel
	booted time.Duration
	// The guest clock right after boot, beside the host's, for "clock".
	bootGuest, bootHost time.Time
	rtcBase             time.Time
	cgroupTest          string // go test -c of internal/cgroup, for "oom"
	envdapiTest         string // go test -c of internal/envdapi, for "exit_reports"
	envdBin             string // the host's bin/envd, for "upgrade"
	saved               string // the state snapshot_restore saved, for the checks after it
	procs               int    // processes_10k's count (-procs, to measure)
	mem10k              int    // processes_10k's VM memory in MiB
	logf                func(string, ...any)
}

type check struct {
	name string
	run  func(*suite, context.Context) (string, error)
	// budget bounds the check; the Start contexts carry no deadline.
	budget time.Duration
}

func checks() []check {
	return []check{
		{"pid1", (*suite).pid1, time.Minute},
		{"sdk_e2e", (*suite).sdkE2E, 8 * time.Minute},
		{"mmds", (*suite).mmdsCheck, 2 * time.Minute},
		{"port_forward", (*suite).portForward, 2 * time.Minute},
		{"cgroups", (*suite).cgroups, time.Minute},
		{"oom", (*suite).oom, 5 * time.Minute},
		{"exit_reports", (*suite).exitReports, 3 * time.Minute},
		{"orphans", (*suite).orphans, time.Minute},
		{"clock", (*suite).clock, time.Minute},
		// Issue 12: the orchestrator's endpoints (§18).
		{"fsfreeze", (*suite).fsfreeze, 2 * time.Minute},
		{"nfs_volume", (*suite).nfsVolume, 2 * time.Minute},
		// Issue 10: VM life.
		{"disk_full", (*suite).diskFull, time.Minute},
		{"bench_in_vm", (*suite).benchInVM, 4 * time.Minute},
		{"snapshot_restore", (*suite).snapshotRestore, 5 * time.Minute},
		{"restore_twice", (*suite).restoreTwice, 5 * time.Minute},
		{"memory_limit_restore", (*suite).memoryLimitRestore, 5 * time.Minute},
		// In a 4 GiB VM of its own: about 5 minutes under TCG here.
		{"processes_10k", (*suite).processes10k, 15 * time.Minute},
		{"upgrade", (*suite).upgrade, 5 * time.Minute},
		{"shutdown", (*suite).shutdown, 2 * time.Minute},
	}
}

func main() { os.Exit(run()) }

func run() int {
	t0 := time.Now()
	fs := flag.NewFlagSet("vm-test", flag.ContinueOnError)
	image := fs.String("image", ".cache/vm/current", "image directory made by scripts/vm-image")
	e2e := fs.String("e2e", "e2e/sdk-js/run.sh", "the SDK suite runner for sdk_e2e (run with ENVD_URL set)")
	e2eMS := fs.Int("e2e-timeout-ms", 0, "E2E_TIMEOUT_MS for the SDK suite (default: 300000 under TCG, 90000 under KVM)")
	only := fs.String("only", "", "run only the checks matching this regexp (shutdown always ends the VM)")
	mem := fs.Int("mem", 1024, "guest memory in MiB")
	procs := fs.Int("procs", 10000, "how many processes processes_10k starts (fewer only to measure its rate)")
	mem10k := fs.Int("mem10k", 4096, "guest memory in MiB of processes_10k's own VM")
	keep := fs.Bool("keep", false, "keep the work directory (console log, disk) even when every check passed")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var onlyRE *regexp.Regexp
	if *only != "" {
		var err error
		if onlyRE, err = regexp.Compile(*only); err != nil {
			fmt.Fprintln(os.Stderr, "vm-test: -only:", err)
			return 2
		}
	}
	s := &suite{e2e: *e2e, e2eMS: *e2eMS, procs: max(*procs, 10), mem10k: *mem10k, logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "vm-test: "+f+"\n", a...) }}
	if abs, err := filepath.Abs(s.e2e); err == nil {
		s.e2e = abs
	}
	work, err := os.MkdirTemp("", "envd-vm-test-")
	if err != nil {
		s.logf("%v", err)
		return 1
	}
	s.work = work
	failed, err := s.setup(*image, *mem)
	if err != nil {
		s.logf("setup: %v", err)
		s.nfs.Close()
		fmt.Println("FAIL boot: " + firstLine(err.Error()))
		fmt.Println("0 passed, 1 failed")
		s.logf("work directory kept: %s", work)
		return 1
	}
	// Ctrl-C or SIGTERM: no VM left behind.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigc
		s.logf("%v: stopping the VM; work directory %s", sig, work)
		s.m.Kill()
		s.nfs.Close()
		os.Exit(130)
	}()
	passed := 0
	for _, c := range checks() {
		if onlyRE != nil && !onlyRE.MatchString(c.name) {
			continue
		}
		ctx, cancel := vm.Budget(context.Background(), c.budget)
		start := time.Now()
		detail, err := runCheck(ctx, s, c)
		cancel()
		took := time.Since(start).Round(100 * time.Millisecond)
		if err != nil {
			failed++
			fmt.Printf("FAIL %s: %s (%s)\n", c.name, oneLine(err.Error()), took)
			if strings.Contains(err.Error(), "\n") {
				s.logf("%s in full:\n%s", c.name, err)
			}
		} else {
			passed++
			fmt.Printf("PASS %s: %s (%s)\n", c.name, detail, took)
		}
	}
	// Whatever the checks did: no qemu outlives this run.
	s.m.Kill()
	s.mmds.Close()
	s.nfs.Close()
	s.logf("accelerator %s; envd answered %s after qemu started; wall time %s", s.accel, s.booted.Round(10*time.Millisecond), time.Since(t0).Round(time.Second))
	if failed > 0 || *keep {
		s.logf("work directory kept: %s (console.log: the guest's serial console)", work)
	} else {
		os.RemoveAll(work)
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

func runCheck(ctx context.Context, s *suite, c check) (detail string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	done := make(chan struct{})
	go func() { detail, err = c.run(s, ctx); close(done) }()
	select {
	case <-done:
		return detail, err
	case <-time.After(c.budget + 10*time.Second):
		return "", fmt.Errorf("no verdict within %s", c.budget)
	}
}

// goBuild builds the module in dir (its own go.mod: GOWORK=off) static,
// as everything run in the guest must be, into bin.
func goBuild(ctx context.Context, dir, bin string) error {
	build := exec.CommandContext(ctx, "go", "-C", dir, "build", "-trimpath", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v: %s", dir, err, out)
	}
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// setup builds the cgroup test binary, starts MMDS and boots the VM.
func (s *suite) setup(image string, mem int) (_ int, err error) {
	s.cgroupTest = filepath.Join(s.work, "cgroup.test")
	s.envdapiTest = filepath.Join(s.work, "envdapi.test")
	for bin, pkg := range map[string]string{s.cgroupTest: "./internal/cgroup", s.envdapiTest: "./internal/envdapi"} {
		// Static, as everything run in the guest must be: the root
		// filesystem has a C library, but not necessarily the host's
		// version. No -race: it needs cgo and doubles the peaks measured.
		build := exec.Command("go", "test", "-c", "-o", bin, pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("go test -c %s: %v: %s", pkg, err, out)
		}
	}
	// What scripts/vm-image put in the image (scripts/build made it).
	if s.envdBin, err = filepath.Abs("bin/envd"); err != nil {
		return 0, err
	}
	s.accel = vm.ChooseAccel(image, s.work)
	s.logf("accelerator %s", s.accel)
	s.md = map[string]any{
		"instanceID":      "vmtest-" + randHex(6),
		"envID":           "tmpl-" + randHex(4),
		"address":         "http://" + vm.GatewayIP + ":9/logs",
		"accessTokenHash": "",
	}
	if s.mmds, err = vm.ServeMMDS(s.md); err != nil {
		return 0, err
	}
	if s.nfs, err = startNFS(s.work); err != nil {
		return 0, err
	}
	// A year in the past: /init's timestamp must bring the clock back.
	s.rtcBase = time.Now().UTC().Add(-365 * 24 * time.Hour).Truncate(time.Second)
	cfg := vm.Config{Image: image, WorkDir: s.work, MemMiB: mem, MMDSPort: s.mmds.Port, NFSPort: s.nfs.port, Accel: s.accel,
		RTCBase: s.rtcBase.Format("2006-01-02T15:04:05"), Log: os.Stderr}
	if s.m, err = vm.Start(cfg); err != nil {
		return 0, err
	}
	s.logf("qemu pid %d, envd forwarded to %s, work directory %s", s.m.PID(), s.m.URL, s.work)
	timeout := 240 * time.Second
	if s.accel.Name == "kvm" {
		timeout = 60 * time.Second
	}
	if s.booted, err = s.m.WaitHealthy(context.Background(), timeout); err != nil {
		s.m.Kill()
		return 0, err
	}
	s.c = vm.NewClient(s.m.URL)
	ctx, cancel := vm.Budget(context.Background(), time.Minute)
	defer cancel()
	out, err := s.c.Output(ctx, "root", "date +%s")
	s.bootHost = time.Now()
	if err != nil {
		return 0, fmt.Errorf("first Start: %w", err)
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("guest date: %q", out)
	}
	s.bootGuest = time.Unix(sec, 0)
	return 0, nil
}
