// Package freeze is the workload freezer the E2B orchestrator drives before a
// pause (§18.2): it freezes the static workload cgroups ("user", "ptys"), or,
// in hierarchy mode, every cgroup beside envd's own ancestor chain, keeps the
// cgroups the guest froze itself (docker pause) as it found them, and thaws
// on /unfreeze, on every authorised /init, and from a watchdog when nobody
// comes back. One weight-1 lock serialises every freeze and thaw.
package freeze

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/envd-dev/envd/internal/cgroup"
)

// Mode selects the sweep.
type Mode string

const (
	// Legacy freezes only the static workload cgroups.
	Legacy Mode = "legacy"
	// Hierarchy also freezes every sibling of envd's ancestor chain.
	Hierarchy Mode = "hierarchy"
)

const (
	// DefaultMaxCgroups and MaxCgroupsLimit bound a hierarchy sweep's visits.
	DefaultMaxCgroups = 512
	MaxCgroupsLimit   = 8192
	// walkLimit caps the guest scan, the thaw walk and the audit walk.
	walkLimit = 8192
	// DefaultWatchdog is how long a freeze of ours may last before envd
	// thaws by itself. It runs on the monotonic clock, which stands still
	// while the VM is paused, so it effectively counts from the resume.
	DefaultWatchdog = 10 * time.Minute
	pollInterval    = 2 * time.Millisecond
)

// staticGroups are frozen by both modes and always thawed.
func staticGroups() []string { return []string{string(cgroup.User), string(cgroup.PTY)} }

// allowlist names the subtrees (relative to the root) a sweep never freezes:
// init, the journal, NFS's rpcbind/statd, and the port forwarders.
func allowlist() []string {
	return []string{
		"init.scope",
		"system.slice/systemd-journald.service",
		"system.slice/rpcbind.service",
		"system.slice/rpcbind.socket",
		"system.slice/rpc-statd.service",
		"socats",
	}
}

var (
	// ErrLockTimeout: the caller's context ended before the lock was free.
	ErrLockTimeout = errors.New("freeze: context ended while waiting for the freezer lock")
	// ErrWaitCancelled: the caller's context ended while waiting for the
	// cgroups to settle. The cgroups are frozen nonetheless.
	ErrWaitCancelled = errors.New("freeze: context ended while waiting for cgroups to settle")
	// ErrThawTruncated: the thaw walk hit its cap, so some cgroups may still be frozen.
	ErrThawTruncated = errors.New("thaw: walk truncated")
)

// Options of one freeze.
type Options struct {
	Mode Mode
	// MaxCgroups caps a hierarchy sweep's visits: ≤0 ⇒ DefaultMaxCgroups,
	// clamped to MaxCgroupsLimit.
	MaxCgroups int
	// MaxWait > 0 waits that long for the written cgroups to settle and fills
	// Frozen, NotFrozen and WaitTime; 0 returns right after the writes.
	MaxWait time.Duration
}

// Result reports one freeze (the FreezeResult of §18.2).
type Result struct {
	Mode         Mode // the sweep actually run
	Visited      int  // children examined by the hierarchy walk
	Allowlisted  int
	Truncated    bool // the walk or the guest scan hit its cap
	PreFrozen    int  // size of the guest-frozen record
	Requested    int  // cgroups written
	Frozen       int  // written cgroups read back frozen
	NotFrozen    int
	Failed       int // write, read and listing errors
	Unobservable int // cgroups whose state cannot be read (no cgroups)
	SweepTime    time.Duration
	WaitTime     time.Duration
}

// Audit counts what a hierarchy freeze left (the X-Envd-Freeze-Audit header).
type Audit struct {
	Visited    int  `json:"visited"`
	Frozen     int  `json:"frozen"`
	Escaped    int  `json:"escaped"`
	Violations int  `json:"violations"`
	Truncated  bool `json:"truncated"`
}

// Config of a Freezer.
type Config struct {
	// Root is the cgroup v2 root holding "user" and "ptys"; "" means envd
	// runs without cgroups: a freeze writes nothing and reports every
	// static group as unobservable.
	Root string
	// Self is envd's own cgroup directory (cgroup.SelfDir). Outside Root or
	// "" means it cannot be located, and a hierarchy freeze runs legacy.
	Self string
	// Watchdog overrides DefaultWatchdog.
	Watchdog time.Duration
	Log      *slog.Logger
}

// Freezer implements §18.2. It is safe for concurrent use.
type Freezer struct {
	root     string
	chain    []string // root-to-envd relative paths, "" first; nil if unknown
	watchdog time.Duration
	log      *slog.Logger

	lock chan struct{} // weight-1, so a waiting freeze honours its context

	mu        sync.Mutex
	active    bool            // a freeze of ours is in effect
	guest     map[string]bool // the guest-frozen record
	hierarchy bool            // the last sweep was hierarchy and nothing thawed since
	epoch     uint64          // bumped by every sweep and thaw
	timer     *time.Timer
	timerGen  uint64
	thawHooks []func()
}

// New returns a Freezer; nothing is written until Freeze.
func New(c Config) *Freezer {
	f := &Freezer{root: c.Root, watchdog: c.Watchdog, log: c.Log, lock: make(chan struct{}, 1), guest: map[string]bool{}}
	if f.watchdog <= 0 {
		f.watchdog = DefaultWatchdog
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if c.Root != "" && c.Self != "" {
		if rel, err := filepath.Rel(c.Root, c.Self); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			f.chain = ancestors(filepath.ToSlash(rel))
		}
	}
	return f
}

// ancestors lists "", "a", "a/b", ... up to rel itself ("." is the root).
func ancestors(rel string) []string {
	out := []string{""}
	if rel == "." || rel == "" {
		return out
	}
	parts := strings.Split(rel, "/")
	for i := range parts {
		out = append(out, strings.Join(parts[:i+1], "/"))
	}
	return out
}

// OnThaw registers fn to run after every thaw, clean or not (a live upgrade
// releases the kill timers of re-adopted processes there).
func (f *Freezer) OnThaw(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.thawHooks = append(f.thawHooks, fn)
}

// GuestFrozen is the guest-frozen record, sorted, for a live upgrade's handover.
func (f *Freezer) GuestFrozen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.guest))
	for p := range f.guest {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Restore takes over the state of the envd that froze the workload before
// handing over to this one: its guest-frozen record, and a freeze of ours in
// effect, so the next thaw walks the whole tree but leaves those cgroups be.
// The watchdog is armed as after a freeze.
func (f *Freezer) Restore(guestFrozen []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.guest = map[string]bool{}
	for _, p := range guestFrozen {
		f.guest[p] = true
	}
	f.active = true
	f.epoch++
	f.armLocked()
}

// Active reports whether a freeze of ours is in effect.
func (f *Freezer) Active() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active
}

func (f *Freezer) abs(rel string) string { return filepath.Join(f.root, filepath.FromSlash(rel)) }

func join(parent, child string) string {
	if parent == "" {
		return child
	}
	return parent + "/" + child
}

func allowlisted(rel string) bool {
	for _, a := range allowlist() {
		if rel == a || strings.HasPrefix(rel, a+"/") {
			return true
		}
	}
	return false
}

func depth(rel string) int {
	if rel == "" {
		return 0
	}
	return strings.Count(rel, "/") + 1
}

func isStatic(rel string) bool { return slices.Contains(staticGroups(), rel) }

// descendSet is envd's ancestor chain plus the ancestors of allowlist
// entries: the cgroups whose children a hierarchy sweep examines and that it
// never freezes itself.
func (f *Freezer) descendSet() map[string]bool {
	ds := map[string]bool{}
	for _, p := range f.chain {
		ds[p] = true
	}
	for _, a := range allowlist() {
		for _, p := range ancestors(a) {
			if p != a {
				ds[p] = true
			}
		}
	}
	return ds
}

// Freeze runs one sweep (§18.2 algorithm). It fails with ErrLockTimeout when
// ctx ends before the lock is obtained and with ErrWaitCancelled when ctx
// ends while waiting for the cgroups to settle; other failures are counted
// in the Result, never returned.
func (f *Freezer) Freeze(ctx context.Context, o Options) (Result, error) {
	// A free lock is taken even by a request already ended, as the wait
	// below then reports; only a contended one gives up on ctx.
	select {
	case f.lock <- struct{}{}:
	default:
		select {
		case f.lock <- struct{}{}:
		case <-ctx.Done():
			return Result{}, ErrLockTimeout
		}
	}
	defer func() { <-f.lock }()
	return f.freezeLocked(ctx, o)
}

// Lock takes the freezer's lock, for a caller that must keep every other
// freeze and thaw out across several steps (a live upgrade, from its freeze
// to the execve); it then uses FreezeLocked and ThawLocked.
func (f *Freezer) Lock() { f.lock <- struct{}{} }

// Unlock releases the lock taken by Lock.
func (f *Freezer) Unlock() { <-f.lock }

// FreezeLocked is the strict legacy freeze of a live upgrade, under Lock: it
// fails unless every cgroup it wrote reads frozen within wait. Without
// cgroups there is nothing to freeze and it succeeds.
func (f *Freezer) FreezeLocked(wait time.Duration) error {
	if f.root == "" {
		return nil
	}
	res, err := f.freezeLocked(context.Background(), Options{Mode: Legacy, MaxWait: max(wait, time.Millisecond)})
	if err != nil {
		return err
	}
	if res.Failed > 0 || res.Frozen != res.Requested {
		return fmt.Errorf("freeze: %d of %d cgroups frozen, %d errors", res.Frozen, res.Requested, res.Failed)
	}
	return nil
}

// ThawLocked is Thaw under Lock. The OnThaw hooks do not run: the caller
// holds the lock and knows what it thawed.
func (f *Freezer) ThawLocked() error { return f.thawLocked() }

func (f *Freezer) freezeLocked(ctx context.Context, o Options) (Result, error) {
	start := time.Now()
	res := Result{Mode: Legacy}
	addressable := f.root != ""

	f.mu.Lock()
	active := f.active
	f.mu.Unlock()
	scanned := false
	if addressable && !active && !f.staticSettled() {
		rec, truncated := f.scanGuest()
		f.mu.Lock()
		f.guest = rec
		f.mu.Unlock()
		scanned, res.Truncated = true, truncated
	}
	f.mu.Lock()
	guest := maps.Clone(f.guest)
	f.mu.Unlock()

	var written []string
	write := func(rel string) {
		if err := cgroup.SetFreeze(f.abs(rel), true); err != nil {
			res.Failed++
			f.log.Warn("freeze cgroup", "cgroup", rel, "err", err)
			return
		}
		res.Requested++
		written = append(written, rel)
	}
	for _, g := range staticGroups() {
		if !addressable {
			res.Requested++
			res.Unobservable++
			continue
		}
		write(g)
	}
	if o.Mode == Hierarchy && addressable && f.chain != nil {
		res.Mode = Hierarchy
		limit := visitLimit(o.MaxCgroups)
		ds := f.descendSet()
		parents := make([]string, 0, len(ds))
		for p := range ds {
			parents = append(parents, p)
		}
		// Breadth-first: shallower parents first, each level in name order.
		slices.SortFunc(parents, func(a, b string) int {
			if d := depth(a) - depth(b); d != 0 {
				return d
			}
			return strings.Compare(a, b)
		})
	sweep:
		for _, p := range parents {
			kids, err := cgroup.Children(f.abs(p))
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					res.Failed++
					f.log.Warn("list cgroup children", "cgroup", p, "err", err)
				}
				continue
			}
			for _, k := range kids {
				if res.Visited >= limit {
					res.Truncated = true
					break sweep
				}
				res.Visited++
				rel := join(p, k)
				switch {
				case ds[rel], isStatic(rel):
					continue
				case allowlisted(rel):
					res.Allowlisted++
					continue
				case guest[rel]:
					continue
				}
				if scanned {
					if on, err := cgroup.FreezeRequested(f.abs(rel)); err == nil && on {
						// Frozen by the guest between the scan and now.
						guest[rel] = true
						continue
					}
				}
				write(rel)
			}
		}
	}
	res.SweepTime = time.Since(start)

	f.mu.Lock()
	if scanned {
		f.guest = guest
	}
	res.PreFrozen = len(guest)
	f.hierarchy = res.Mode == Hierarchy
	f.epoch++
	if len(written) > 0 {
		f.active = true
		f.armLocked()
	}
	f.mu.Unlock()
	f.log.Info("freeze", "mode", res.Mode, "requested", res.Requested, "failed", res.Failed, "preFrozen", res.PreFrozen, "visited", res.Visited)

	if o.MaxWait <= 0 {
		return res, nil
	}
	return res, f.wait(ctx, o.MaxWait, written, &res)
}

// visitLimit is the hierarchy cap for a requested maxCgroups.
func visitLimit(n int) int {
	if n <= 0 {
		return DefaultMaxCgroups
	}
	return min(n, MaxCgroupsLimit)
}

// wait polls cgroup.events of the written cgroups until all are frozen, the
// budget ends or ctx does.
func (f *Freezer) wait(ctx context.Context, budget time.Duration, written []string, res *Result) error {
	start := time.Now()
	deadline := start.Add(budget)
	pending := slices.Clone(written)
	readFailed := 0
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if ctx.Err() != nil {
			res.WaitTime = time.Since(start)
			return ErrWaitCancelled
		}
		next := pending[:0]
		for _, rel := range pending {
			frozen, err := cgroup.Frozen(f.abs(rel))
			switch {
			case err != nil:
				readFailed++
				f.log.Warn("read cgroup freeze state", "cgroup", rel, "err", err)
			case !frozen:
				next = append(next, rel)
			}
		}
		pending = next
		if len(pending) == 0 || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			res.WaitTime = time.Since(start)
			return ErrWaitCancelled
		case <-tick.C:
		}
	}
	res.WaitTime = time.Since(start)
	res.Failed += readFailed
	res.Frozen = len(written) - len(pending) - readFailed
	res.NotFrozen = res.Requested - res.Frozen - readFailed - res.Unobservable
	return nil
}

// staticSettled reports whether user and ptys are both settled frozen: then
// a freeze is in effect even if this process did not make it.
func (f *Freezer) staticSettled() bool {
	for _, g := range staticGroups() {
		if frozen, err := cgroup.Frozen(f.abs(g)); err != nil || !frozen {
			return false
		}
	}
	return true
}

// scanGuest records every cgroup whose own freeze request is set, outside
// the descend set, the static pair and allowlisted subtrees.
func (f *Freezer) scanGuest() (map[string]bool, bool) {
	ds := f.descendSet()
	rec := map[string]bool{}
	truncated := f.walk(func(rel string) {
		if ds[rel] || isStatic(rel) || allowlisted(rel) {
			return
		}
		if on, err := cgroup.FreezeRequested(f.abs(rel)); err == nil && on {
			rec[rel] = true
		}
	}, nil)
	if len(rec) > 0 {
		f.log.Info("cgroups frozen by the guest kept as they are", "cgroups", slices.Sorted(maps.Keys(rec)))
	}
	return rec, truncated
}

// walk visits every cgroup below the root breadth-first, in name order, up
// to walkLimit of them; it reports whether it stopped at the cap. Listing
// errors other than a vanished cgroup go to onErr.
func (f *Freezer) walk(visit func(rel string), onErr func(error)) bool {
	queue := []string{""}
	n := 0
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		kids, err := cgroup.Children(f.abs(p))
		if err != nil {
			if onErr != nil && !errors.Is(err, fs.ErrNotExist) {
				onErr(err)
			}
			continue
		}
		for _, k := range kids {
			if n >= walkLimit {
				return true
			}
			n++
			rel := join(p, k)
			visit(rel)
			queue = append(queue, rel)
		}
	}
	return false
}

// Thaw undoes freezes (§18.2 Thaw), for /unfreeze, /init, the handover
// fallback and the watchdog. It waits for the lock without regard to ctx:
// a thaw that gave up could leave a live sandbox frozen. A nil error is a
// clean thaw, which disarms the watchdog; after an error the watchdog stays
// armed and the next thaw walks again.
func (f *Freezer) Thaw(ctx context.Context) error {
	_ = ctx
	f.lock <- struct{}{}
	err := f.thawLocked()
	<-f.lock
	f.mu.Lock()
	hooks := slices.Clone(f.thawHooks)
	f.mu.Unlock()
	for _, h := range hooks {
		h()
	}
	return err
}

func (f *Freezer) thawLocked() error {
	if f.root == "" {
		f.mu.Lock()
		f.finishThawLocked(true)
		f.mu.Unlock()
		return nil
	}
	var errs []error
	for _, g := range staticGroups() {
		if err := cgroup.SetFreeze(f.abs(g), false); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("%s: %w", g, err))
		}
	}
	f.mu.Lock()
	active, guest := f.active, maps.Clone(f.guest)
	f.mu.Unlock()
	thawed, preserved := 0, 0
	if active {
		chain := map[string]bool{}
		for _, p := range f.chain {
			chain[p] = true
		}
		truncated := f.walk(func(rel string) {
			if chain[rel] {
				return
			}
			if guest[rel] {
				preserved++
				return
			}
			on, err := cgroup.FreezeRequested(f.abs(rel))
			if errors.Is(err, fs.ErrNotExist) || (err == nil && !on) {
				return
			}
			if err == nil {
				err = cgroup.SetFreeze(f.abs(rel), false)
				thawed++
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("%s: %w", rel, err))
			}
		}, func(err error) { errs = append(errs, err) })
		if truncated {
			errs = append(errs, ErrThawTruncated)
		}
	}
	err := errors.Join(errs...)
	f.mu.Lock()
	f.finishThawLocked(err == nil)
	f.mu.Unlock()
	if err != nil {
		f.log.Warn("thaw incomplete", "err", err)
	} else if active {
		f.log.Info("thawed", "cgroups", thawed, "guestFrozenKept", preserved)
	}
	return err
}

func (f *Freezer) finishThawLocked(clean bool) {
	f.epoch++
	f.hierarchy = false
	if clean {
		f.active = false
		f.disarmLocked()
	}
}

// armLocked (re)starts the watchdog. A generation guards against a timer
// that fired just as it was re-armed.
func (f *Freezer) armLocked() {
	f.disarmLocked()
	gen := f.timerGen
	f.timer = time.AfterFunc(f.watchdog, func() { f.watchdogFired(gen) })
}

func (f *Freezer) disarmLocked() {
	f.timerGen++
	if f.timer != nil {
		f.timer.Stop()
		f.timer = nil
	}
}

func (f *Freezer) watchdogFired(gen uint64) {
	f.mu.Lock()
	current := gen == f.timerGen
	f.mu.Unlock()
	if !current {
		return
	}
	f.log.Warn("freeze watchdog: nobody thawed the workload, thawing it", "after", f.watchdog)
	if err := f.Thaw(context.Background()); err != nil {
		f.mu.Lock()
		if f.active {
			f.armLocked()
		}
		f.mu.Unlock()
	}
}

// Audit walks the tree after a hierarchy freeze and counts what it left
// frozen and what escaped. ok is false unless the last sweep of this
// process was a hierarchy sweep with no thaw since, or when a freeze or thaw
// ran during the walk.
func (f *Freezer) Audit() (a Audit, ok bool) {
	f.mu.Lock()
	ok, epoch := f.hierarchy, f.epoch
	f.mu.Unlock()
	if !ok || f.root == "" {
		return Audit{}, false
	}
	ds := f.descendSet()
	var escaped, violations []string
	a.Truncated = f.walk(func(rel string) {
		frozen, err := cgroup.Frozen(f.abs(rel))
		if err != nil {
			return
		}
		a.Visited++
		protected := ds[rel] || allowlisted(rel)
		switch {
		case frozen && protected:
			a.Violations++
			violations = append(violations, rel)
		case frozen:
			a.Frozen++
		case !protected:
			a.Escaped++
			escaped = append(escaped, rel)
		}
	}, nil)
	f.mu.Lock()
	same := f.epoch == epoch
	f.mu.Unlock()
	if !same {
		return Audit{}, false
	}
	if len(violations) > 0 || len(escaped) > 0 {
		f.log.Warn("freeze audit", "violations", violations, "escaped", escaped)
	}
	return a, true
}
