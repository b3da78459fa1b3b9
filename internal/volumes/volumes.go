// Package volumes mounts the NFS volumes /init asks for (§18.6, §11.5) and
// keeps the ledger of which VM lifecycle mounted each path. The orchestrator
// repeats /init every few milliseconds until one attempt answers within
// 50 ms, and sends the same volumes after every resume: a path already
// mounted by this lifecycle is skipped without running anything, while a new
// lifecycle (a new Firecracker VM, whose NFS client state is stale) forces a
// remount.
//
// The mounting is done by the system's own binaries (findmnt, umount, mount
// with mount.nfs), as in E2B's envd, through a Runner, so that tests can run
// the same commands inside a private mount namespace.
package volumes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Volume is one entry of /init volumeMounts.
type Volume struct {
	Target string // NFS export, "<host>:/<name>"
	Path   string // mount point in the guest
}

// Runner runs argv and returns its combined stdout and stderr. A non-zero
// exit is an error; ExitCode reports its code.
type Runner func(ctx context.Context, argv []string) ([]byte, error)

// ExitError is a command that ran and exited non-zero.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Options are E2B's mount options (§11.5): hard, synchronous, no attribute
// or lookup caching, so that every sandbox sharing a volume sees the others'
// writes at once.
const Options = "fg,hard,sync,rsize=1048576,wsize=1048576,mountproto=tcp,mountport=2049,proto=tcp,port=2049,nfsvers=3,noacl,noac,lookupcache=none"

// ErrInvalid marks a request that is refused before anything runs.
var ErrInvalid = errors.New("invalid volume mount")

// Mounter mounts volumes and remembers which lifecycle mounted each path.
type Mounter struct {
	Run Runner
	Log *slog.Logger
	// FSType and Options are what mount -t and -o get; New sets E2B's.
	FSType  string
	Options string
	// Budget bounds one MountAll, detached from the request: an /init
	// attempt the orchestrator abandoned after 50 ms must still finish the
	// mount its retry will find in the ledger.
	Budget time.Duration
	// LazyBudget bounds the umount --lazy fallback.
	LazyBudget time.Duration

	// run serializes MountAll; mu guards ledger, which Ledger and Restore
	// read and write while a MountAll runs (a live upgrade's handover).
	run    sync.Mutex
	mu     sync.Mutex
	ledger map[string]string // cleaned path → lifecycleID that mounted it
}

// New returns a Mounter with E2B's options and budgets.
func New(run Runner, log *slog.Logger) *Mounter {
	return &Mounter{Run: run, Log: log, FSType: "nfs", Options: Options, Budget: 10 * time.Second,
		LazyBudget: 2 * time.Second, ledger: map[string]string{}}
}

// Ledger returns a copy of path → lifecycleID, for the live-upgrade handover.
func (m *Mounter) Ledger() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.ledger)
}

// Restore replaces the ledger with one handed over by the previous envd.
func (m *Mounter) Restore(ledger map[string]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ledger = maps.Clone(ledger)
	if m.ledger == nil {
		m.ledger = map[string]string{}
	}
}

func (m *Mounter) mountedBy(path string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.ledger[path]
	return id, ok
}

func (m *Mounter) record(path, id string, mounted bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mounted {
		m.ledger[path] = id
	} else {
		delete(m.ledger, path)
	}
}

// MountAll mounts every volume not already mounted by lifecycleID, in
// parallel; the first failure cancels the others and is returned. Paths not
// in vols are left alone, mounted or not. ctx only carries values: the work
// runs on its own Budget.
func (m *Mounter) MountAll(ctx context.Context, vols []Volume, lifecycleID string) error {
	if err := validate(vols); err != nil {
		return err
	}
	m.run.Lock()
	defer m.run.Unlock()
	var todo []Volume
	for _, v := range vols {
		if id, ok := m.mountedBy(filepath.Clean(v.Path)); !ok || id != lifecycleID {
			todo = append(todo, v)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), m.Budget, errors.New("volume mount budget exhausted"))
	defer cancel()
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	var (
		once  sync.Once
		first error
	)
	// Shallower paths first: a volume mounted inside another must not be
	// hidden by its parent's mount landing after it.
	for _, wave := range byDepth(todo) {
		var wg sync.WaitGroup
		for _, v := range wave {
			wg.Go(func() {
				if err := m.mountOne(ctx, v, lifecycleID); err != nil {
					once.Do(func() { first = err; fail(err) })
				}
			})
		}
		wg.Wait()
		if first != nil {
			return first
		}
	}
	return nil
}

// byDepth groups volumes by the number of components in their path,
// shallowest first.
func byDepth(vols []Volume) [][]Volume {
	depth := func(v Volume) int { return strings.Count(filepath.Clean(v.Path), "/") }
	sorted := slices.Clone(vols)
	slices.SortStableFunc(sorted, func(a, b Volume) int { return depth(a) - depth(b) })
	var waves [][]Volume
	for i, v := range sorted {
		if i == 0 || depth(v) != depth(sorted[i-1]) {
			waves = append(waves, nil)
		}
		waves[len(waves)-1] = append(waves[len(waves)-1], v)
	}
	return waves
}

func validate(vols []Volume) error {
	seen := map[string]bool{}
	for _, v := range vols {
		switch {
		case v.Target == "" || v.Path == "":
			return fmt.Errorf("%w: nfs_target and path are both required (got %q, %q)", ErrInvalid, v.Target, v.Path)
		case !filepath.IsAbs(v.Path):
			return fmt.Errorf("%w: path %q is not absolute", ErrInvalid, v.Path)
		// Both become arguments of mount: a leading dash would be an option.
		case strings.HasPrefix(v.Target, "-"):
			return fmt.Errorf("%w: nfs_target %q starts with '-'", ErrInvalid, v.Target)
		case strings.ContainsRune(v.Target+v.Path, 0):
			return fmt.Errorf("%w: NUL byte in %q %q", ErrInvalid, v.Target, v.Path)
		}
		p := filepath.Clean(v.Path)
		if seen[p] {
			return fmt.Errorf("%w: path %q listed twice", ErrInvalid, v.Path)
		}
		seen[p] = true
	}
	return nil
}

// mountOne is §18.6 steps 1–4 for one volume.
func (m *Mounter) mountOne(ctx context.Context, v Volume, lifecycleID string) error {
	path := filepath.Clean(v.Path)
	mounted, err := m.isMounted(ctx, path)
	if err != nil {
		return err
	}
	if mounted {
		if err := m.unmount(ctx, path); err != nil {
			return err
		}
		m.record(path, "", false)
	}
	// mkdir(1) rather than os.MkdirAll: the directory must be made in the
	// mount namespace the Runner mounts in, under any volume mounted above it.
	mkdir := []string{"mkdir", "-p", path}
	if out, err := m.Run(ctx, mkdir); err != nil {
		return commandError("failed to mount NFS at", path, mkdir, out, ctxErr(ctx, err))
	}
	argv := []string{"mount", "-v", "-t", m.FSType, "-o", m.Options, v.Target, path}
	if out, err := m.Run(ctx, argv); err != nil {
		return commandError("failed to mount NFS at", path, argv, out, ctxErr(ctx, err))
	}
	m.record(path, lifecycleID, true)
	m.Log.Info("mounted volume", "target", v.Target, "path", path, "lifecycleID", lifecycleID)
	return nil
}

func (m *Mounter) isMounted(ctx context.Context, path string) (bool, error) {
	argv := []string{"findmnt", "--noheadings", "--output", "SOURCE", path}
	out, err := m.Run(ctx, argv)
	var exit *ExitError
	switch {
	case errors.As(err, &exit) && exit.Code == 1:
		return false, nil
	case err != nil:
		return false, commandError("failed to check the mount at", path, argv, out, ctxErr(ctx, err))
	}
	return strings.TrimSpace(string(out)) != "", nil
}

// unmount forces the old lifecycle's mount away; its server connection
// belongs to a VM that no longer exists, so a plain umount could hang.
func (m *Mounter) unmount(ctx context.Context, path string) error {
	force := []string{"umount", "--force", path}
	out, err := m.Run(ctx, force)
	if err == nil {
		return nil
	}
	m.Log.Warn("forced unmount failed, detaching lazily", "path", path, "err", err, "output", string(out))
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.LazyBudget)
	defer cancel()
	lazy := []string{"umount", "--lazy", path}
	if out, err := m.Run(lctx, lazy); err != nil {
		return commandError("failed to unmount NFS at", path, lazy, out, ctxErr(lctx, err))
	}
	return nil
}

// ctxErr names why a command was killed, when it was.
func ctxErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return fmt.Errorf("%w (%w)", err, cause)
	}
	return err
}

// commandError is §18.6's message: what, where, the command line in
// backquotes, the error, and the command's output on the next line.
func commandError(what, path string, argv []string, out []byte, err error) error {
	return fmt.Errorf("%s %q: `%s` failed: %w\n%s", what, path, strings.Join(argv, " "), err, strings.TrimRight(string(out), "\n"))
}
