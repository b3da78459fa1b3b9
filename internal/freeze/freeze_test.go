package freeze

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/cgroup"
	"github.com/envd-dev/envd/internal/testkit"
)

const helperEnv = "ENVD_FREEZE_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "ticker":
		// One line per millisecond until killed; frozen, it prints nothing.
		for i := 0; ; i++ {
			fmt.Println(i)
			time.Sleep(time.Millisecond)
		}
	case "selfdir":
		dir, err := cgroup.SelfDir("/proc")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Print(dir)
		os.Exit(0)
	}
	os.Exit(2)
}

// testRoot makes a fresh cgroup directory under the host's cgroup2 mount and
// removes it (thawing and killing whatever is left) when the test ends.
func testRoot(t *testing.T) string {
	t.Helper()
	return testkit.CgroupDir(t, "envd-freeze-test-")
}

func mkcg(t *testing.T, root string, rels ...string) {
	t.Helper()
	for _, rel := range rels {
		if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// ticker is a helper process started directly inside a cgroup.
type ticker struct {
	cmd   *exec.Cmd
	lines atomic.Int64
	seen  chan struct{} // gets a value per line, dropped when full
}

func startTicker(t *testing.T, dir string) *ticker {
	t.Helper()
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=ticker")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tk := &ticker{cmd: cmd, seen: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			tk.lines.Add(1)
			select {
			case tk.seen <- struct{}{}:
			default:
			}
		}
	})
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		wg.Wait()
		_ = cmd.Wait()
	})
	tk.waitLine(t) // running
	return tk
}

// waitLine returns once the ticker prints a line after this call starts.
func (tk *ticker) waitLine(t *testing.T) {
	t.Helper()
	select {
	case <-tk.seen: // may be stale: drain and wait for a fresh one
	default:
	}
	select {
	case <-tk.seen:
	case <-time.After(30 * time.Second):
		t.Fatal("ticker printed nothing for 30s")
	}
}

// assertStopped checks that no line arrives over a while. It cannot fail
// because the machine is slow: a frozen process prints nothing at all.
func (tk *ticker) assertStopped(t *testing.T, name string) {
	t.Helper()
	before := tk.lines.Load()
	time.Sleep(150 * time.Millisecond)
	if after := tk.lines.Load(); after != before {
		t.Errorf("%s printed %d lines while it should be frozen", name, after-before)
	}
}

func requested(t *testing.T, dir string) bool {
	t.Helper()
	on, err := cgroup.FreezeRequested(dir)
	if err != nil {
		t.Fatal(err)
	}
	return on
}

func TestLegacyFreezeStopsOutputUntilThaw(t *testing.T) {
	root := testRoot(t)
	mkcg(t, root, "user", "ptys", "envd", "app")
	user := startTicker(t, filepath.Join(root, "user"))
	app := startTicker(t, filepath.Join(root, "app"))
	f := New(Config{Root: root, Self: filepath.Join(root, "envd")})

	res, err := f.Freeze(context.Background(), Options{Mode: Legacy, MaxWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Mode: Legacy, Requested: 2, Frozen: 2}
	res.SweepTime, res.WaitTime = 0, 0
	if res != want {
		t.Errorf("result = %+v, want %+v", res, want)
	}
	user.assertStopped(t, "user process")
	app.waitLine(t) // legacy leaves every other cgroup alone
	if !f.Active() {
		t.Error("no freeze of ours recorded as active")
	}
	if _, ok := f.Audit(); ok {
		t.Error("audit reported after a legacy freeze")
	}

	if err := f.Thaw(context.Background()); err != nil {
		t.Fatal(err)
	}
	user.waitLine(t)
	if f.Active() || requested(t, filepath.Join(root, "user")) || requested(t, filepath.Join(root, "ptys")) {
		t.Error("thaw left a freeze behind")
	}
	// Unfreezing twice is harmless.
	if err := f.Thaw(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// tree builds the layout of an E2B guest with systemd: envd in its own
// cgroup, the allowlisted services, a guest container paused by the guest.
func tree(t *testing.T, root string) {
	mkcg(t, root, "user", "ptys", "envd", "socats", "init.scope", "app", "app/sub",
		"docker/ctr", "system.slice/systemd-journald.service", "system.slice/cron.service")
}

func TestHierarchyFreezeSparesEnvdAllowlistAndGuestFreezes(t *testing.T) {
	root := testRoot(t)
	tree(t, root)
	app := startTicker(t, filepath.Join(root, "app/sub"))
	cron := startTicker(t, filepath.Join(root, "system.slice/cron.service"))
	envd := startTicker(t, filepath.Join(root, "envd"))
	journald := startTicker(t, filepath.Join(root, "system.slice/systemd-journald.service"))
	socats := startTicker(t, filepath.Join(root, "socats"))
	guest := startTicker(t, filepath.Join(root, "docker/ctr"))
	if err := cgroup.SetFreeze(filepath.Join(root, "docker/ctr"), true); err != nil {
		t.Fatal(err)
	}
	f := New(Config{Root: root, Self: filepath.Join(root, "envd")})

	for round := range 2 {
		res, err := f.Freeze(context.Background(), Options{Mode: Hierarchy, MaxWait: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		res.SweepTime, res.WaitTime = 0, 0
		// Root children: app docker envd init.scope ptys socats system.slice
		// user (8); system.slice children: cron, journald (2).
		want := Result{Mode: Hierarchy, Visited: 10, Allowlisted: 3, PreFrozen: 1,
			Requested: 5, Frozen: 5} // user, ptys, app, docker, cron
		if res != want {
			t.Errorf("round %d: result = %+v, want %+v", round, res, want)
		}
		if got := f.GuestFrozen(); !slices.Equal(got, []string{"docker/ctr"}) {
			t.Errorf("guest record = %q", got)
		}
		app.assertStopped(t, "app")
		cron.assertStopped(t, "cron")
		envd.waitLine(t)
		journald.waitLine(t)
		socats.waitLine(t)
		for _, rel := range []string{"envd", "system.slice", "socats", "init.scope", "system.slice/systemd-journald.service"} {
			if requested(t, filepath.Join(root, rel)) {
				t.Errorf("%s was frozen", rel)
			}
		}
		a, ok := f.Audit()
		if !ok {
			t.Fatal("no audit after a hierarchy freeze")
		}
		// 12 cgroups; frozen and unprotected: user ptys app app/sub docker
		// docker/ctr cron = 7; escaped: none; protected ones are unfrozen.
		if want := (Audit{Visited: 12, Frozen: 7}); a != want {
			t.Errorf("audit = %+v, want %+v", a, want)
		}

		if err := f.Thaw(context.Background()); err != nil {
			t.Fatal(err)
		}
		app.waitLine(t)
		cron.waitLine(t)
		if !requested(t, filepath.Join(root, "docker/ctr")) {
			t.Fatal("thaw undid the guest's own freeze")
		}
		guest.assertStopped(t, "guest-paused container")
		if _, ok := f.Audit(); ok {
			t.Error("audit reported after a thaw")
		}
	}
}

func TestHierarchyWithoutEnvdCgroupRunsLegacy(t *testing.T) {
	root := testRoot(t)
	tree(t, root)
	for _, self := range []string{"", "/sys/fs/cgroup/unified"} { // unknown; outside root
		f := New(Config{Root: root, Self: self})
		res, err := f.Freeze(context.Background(), Options{Mode: Hierarchy, MaxWait: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if res.Mode != Legacy || res.Requested != 2 || res.Visited != 0 {
			t.Errorf("self %q: result = %+v, want a legacy sweep", self, res)
		}
		if requested(t, filepath.Join(root, "app")) {
			t.Errorf("self %q: app frozen by a legacy sweep", self)
		}
		if err := f.Thaw(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHierarchyCap(t *testing.T) {
	root := testRoot(t)
	tree(t, root)
	for _, tc := range []struct {
		max       int
		visited   int
		truncated bool
	}{{2, 2, true}, {0, 10, false}, {-1, 10, false}, {1 << 20, 10, false}} {
		f := New(Config{Root: root, Self: filepath.Join(root, "envd")})
		res, err := f.Freeze(context.Background(), Options{Mode: Hierarchy, MaxCgroups: tc.max})
		if err != nil {
			t.Fatal(err)
		}
		if res.Visited != tc.visited || res.Truncated != tc.truncated {
			t.Errorf("maxCgroups %d: visited %d truncated %v, want %d %v", tc.max, res.Visited, res.Truncated, tc.visited, tc.truncated)
		}
		if err := f.Thaw(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// A second freeze inside a frozen window must not take our own frozen
// cgroups for the guest's.
func TestRefreezeDoesNotRecordOwnFreezes(t *testing.T) {
	root := testRoot(t)
	tree(t, root)
	f := New(Config{Root: root, Self: filepath.Join(root, "envd")})
	for range 2 {
		if _, err := f.Freeze(context.Background(), Options{Mode: Hierarchy}); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.GuestFrozen(); len(got) != 0 {
		t.Fatalf("guest record after two freezes = %q", got)
	}
	// A new envd (after a live upgrade without a record) also sees user and
	// ptys settled frozen and does not rescan.
	f2 := New(Config{Root: root, Self: filepath.Join(root, "envd")})
	if _, err := f2.Freeze(context.Background(), Options{Mode: Hierarchy, MaxWait: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if got := f2.GuestFrozen(); len(got) != 0 {
		t.Fatalf("guest record of a second freezer = %q", got)
	}
	if err := f2.Thaw(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"app", "docker", "user", "system.slice/cron.service"} {
		if requested(t, filepath.Join(root, rel)) {
			t.Errorf("%s still frozen after thaw", rel)
		}
	}
}

func TestRestoreKeepsGuestRecordAcrossHandover(t *testing.T) {
	root := testRoot(t)
	tree(t, root)
	if err := cgroup.SetFreeze(filepath.Join(root, "docker/ctr"), true); err != nil {
		t.Fatal(err)
	}
	old := New(Config{Root: root, Self: filepath.Join(root, "envd")})
	if _, err := old.Freeze(context.Background(), Options{Mode: Hierarchy}); err != nil {
		t.Fatal(err)
	}
	next := New(Config{Root: root, Self: filepath.Join(root, "envd")})
	next.Restore(old.GuestFrozen())
	if err := next.Thaw(context.Background()); err != nil {
		t.Fatal(err)
	}
	if requested(t, filepath.Join(root, "app")) || requested(t, filepath.Join(root, "docker")) {
		t.Error("adopted freeze not thawed")
	}
	if !requested(t, filepath.Join(root, "docker/ctr")) {
		t.Error("adopted guest record not honoured")
	}
}

func TestWatchdogThaws(t *testing.T) {
	root := testRoot(t)
	mkcg(t, root, "user", "ptys", "envd")
	user := startTicker(t, filepath.Join(root, "user"))
	f := New(Config{Root: root, Self: filepath.Join(root, "envd"), Watchdog: 50 * time.Millisecond})
	if _, err := f.Freeze(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	user.waitLine(t) // only the watchdog can thaw it
	// The flag clears once the thaw walk, which resumed user first, ends.
	for deadline := time.Now().Add(30 * time.Second); f.Active(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("freeze still active 30s after the watchdog thawed")
		}
	}
}

func TestNoCgroupsIsUnobservable(t *testing.T) {
	f := New(Config{})
	res, err := f.Freeze(context.Background(), Options{Mode: Hierarchy, MaxWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	res.SweepTime, res.WaitTime = 0, 0
	if want := (Result{Mode: Legacy, Requested: 2, Unobservable: 2}); res != want {
		t.Errorf("result = %+v, want %+v", res, want)
	}
	if err := f.Thaw(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestLockTimeoutAndCancelledWait(t *testing.T) {
	root := testRoot(t)
	mkcg(t, root, "user", "ptys")
	f := New(Config{Root: root})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	f.Lock() // as a live upgrade does
	if _, err := f.Freeze(ctx, Options{MaxWait: time.Second}); !errors.Is(err, ErrLockTimeout) {
		t.Errorf("contended freeze with an ended context: %v, want ErrLockTimeout", err)
	}
	f.Unlock()
	if requested(t, filepath.Join(root, "user")) {
		t.Fatal("freeze wrote without the lock")
	}

	// Free lock, ended request: the sweep runs, the wait reports it.
	if _, err := f.Freeze(ctx, Options{MaxWait: time.Second}); !errors.Is(err, ErrWaitCancelled) {
		t.Errorf("freeze with an ended context: %v, want ErrWaitCancelled", err)
	}
	if !requested(t, filepath.Join(root, "user")) {
		t.Error("cgroups not frozen after a cancelled wait")
	}
	if err := f.Thaw(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSelfDirOfARealProcess(t *testing.T) {
	root := testRoot(t)
	mkcg(t, root, "envd")
	dir := filepath.Join(root, "envd")
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=selfdir")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != dir {
		t.Errorf("SelfDir in %s = %q", dir, out)
	}
}

// The thaw walk must tolerate cgroups vanishing while it runs.
func TestThawToleratesVanishingCgroups(t *testing.T) {
	root := testRoot(t)
	tree(t, root)
	f := New(Config{Root: root, Self: filepath.Join(root, "envd")})
	if _, err := f.Freeze(context.Background(), Options{Mode: Hierarchy}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := filepath.Join(root, "app", "churn"+strconv.Itoa(i%4))
			if os.Mkdir(p, 0o755) == nil {
				_ = cgroup.SetFreeze(p, true)
				_ = os.Remove(p)
			}
		}
	})
	err := f.Thaw(context.Background())
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("thaw with cgroups coming and going: %v", err)
	}
}

// upgradeFreezer is the interface internal/upgrade (branch upgrade) defines
// for the freezer it drives; kept here so a drift shows up at compile time.
type upgradeFreezer interface {
	Lock()
	Unlock()
	FreezeLocked(wait time.Duration) error
	ThawLocked() error
	GuestFrozen() []string
	Restore(guestFrozen []string)
}

var _ upgradeFreezer = (*Freezer)(nil)

func TestFreezeLockedIsStrictLegacy(t *testing.T) {
	root := testRoot(t)
	tree(t, root)
	f := New(Config{Root: root, Self: filepath.Join(root, "envd")})
	f.Lock()
	err := f.FreezeLocked(time.Minute)
	frozenUser, frozenApp := requested(t, filepath.Join(root, "user")), requested(t, filepath.Join(root, "app"))
	thawErr := f.ThawLocked()
	f.Unlock()
	if err != nil || thawErr != nil {
		t.Fatalf("FreezeLocked: %v; ThawLocked: %v", err, thawErr)
	}
	if !frozenUser || frozenApp {
		t.Errorf("FreezeLocked froze user=%v app=%v, want the legacy pair only", frozenUser, frozenApp)
	}
	if requested(t, filepath.Join(root, "user")) {
		t.Error("ThawLocked left user frozen")
	}

	// A workload cgroup that cannot be written fails the strict freeze.
	if err := os.Remove(filepath.Join(root, "ptys")); err != nil {
		t.Fatal(err)
	}
	f.Lock()
	err = f.FreezeLocked(time.Minute)
	_ = f.ThawLocked()
	f.Unlock()
	if err == nil {
		t.Error("FreezeLocked succeeded with ptys missing")
	}
	if err := New(Config{}).FreezeLocked(time.Second); err != nil {
		t.Errorf("FreezeLocked without cgroups: %v", err)
	}
}

func TestVisitLimit(t *testing.T) {
	for in, want := range map[int]int{-5: 512, 0: 512, 1: 1, 512: 512, 8192: 8192, 8193: 8192, 1 << 30: 8192} {
		if got := visitLimit(in); got != want {
			t.Errorf("visitLimit(%d) = %d, want %d", in, got, want)
		}
	}
}

// The default cap is real: 513 siblings, maxCgroups absent, 512 visited.
func TestHierarchyDefaultCapOnManyCgroups(t *testing.T) {
	root := testRoot(t)
	mkcg(t, root, "user", "ptys", "envd")
	for i := range 510 {
		mkcg(t, root, "c"+strconv.Itoa(i))
	}
	f := New(Config{Root: root, Self: filepath.Join(root, "envd")})
	res, err := f.Freeze(context.Background(), Options{Mode: Hierarchy})
	if err != nil {
		t.Fatal(err)
	}
	if res.Visited != 512 || !res.Truncated {
		t.Errorf("visited %d truncated %v, want 512 true", res.Visited, res.Truncated)
	}
	if err := f.Thaw(context.Background()); err != nil {
		t.Fatal(err)
	}
}
