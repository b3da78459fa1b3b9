// Package fswatch watches a directory, optionally its whole subtree, with raw
// inotify and turns kernel events into typed, ordered events named relative
// to the watched directory (§9.3). It never loses events silently: when the
// kernel queue overflows the watch ends with ErrOverflow.
//
// A recursive watch adds every subdirectory, including those created or
// moved in after it started. Entries that appear inside a new directory
// before its watch is in place are announced with synthetic Create events,
// and the later kernel Create for the same name is suppressed, so each entry
// is announced once. Such a file that already has content also gets a
// synthetic Write, since its writes happened before anyone could see them.
//
// Atomic writes of this process (uploads) are reported as the in-place writes
// clients expect, never by their temporary names; see Options.Staged.
//
// fswatch imports neither proto nor connect; internal/fsapi turns its events
// into wire messages.
package fswatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Op is one kind of change. A kernel event may map to several Ops; they are
// delivered in the order Create, Rename, Chmod, Write, Remove (§9.3).
type Op uint8

// The kinds of change, mirroring the wire's EventType.
const (
	Create Op = iota + 1
	Write
	Remove
	Rename
	Chmod
)

func (o Op) String() string {
	switch o {
	case Create:
		return "CREATE"
	case Write:
		return "WRITE"
	case Remove:
		return "REMOVE"
	case Rename:
		return "RENAME"
	case Chmod:
		return "CHMOD"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Event is one change. Name is relative to the watched directory
// ("nested/file.txt"); changes of the watched directory itself are named ".".
type Event struct {
	Name string
	Op   Op
}

var (
	// ErrOverflow ends a watch whose kernel queue overflowed: some events
	// were lost and the client must rescan.
	ErrOverflow = errors.New("inotify event queue overflowed, events were lost")
	// ErrRootGone ends a watch whose directory was deleted or unmounted.
	ErrRootGone = errors.New("watched directory was removed")
	// ErrNotDir is returned by Start for a path that is not a directory.
	ErrNotDir = errors.New("not a directory")
	// ErrNetworkFS is returned by Start for NFS/CIFS/SMB/FUSE paths unless allowed.
	ErrNetworkFS = errors.New("cannot watch path on network filesystem")
)

// Options tune a watch.
type Options struct {
	Recursive bool
	// AllowNetworkMounts permits filesystems whose changes inotify may not
	// see (changes made by other clients of a network filesystem).
	AllowNetworkMounts bool
	// Buffer is the capacity of the Events channel (default 256). When it is
	// full the watcher stops reading, so the kernel queue fills and
	// eventually overflows into ErrOverflow.
	Buffer int
	// Staged recognises the temporary files of this process's atomic
	// writes (fsops.Writer.Staged): their events are never reported, and the
	// rename of one into place is reported as the start of an in-place
	// write, CREATE, CHMOD for a new file or CHMOD, WRITE for a replaced one.
	// The write's own modification of the target that follows the rename
	// is the last WRITE. Nil reports every name as the kernel does.
	Staged func(name string) (replaces, ok bool)
	// Pool, if set, provides the inotify instance and takes it back when
	// the watch ends cleanly.
	Pool *Pool
}

// maxStagedMoves bounds the renames of temporary files waiting for their
// second half; a temporary file moved out of the watched tree by someone
// else never gets one.
const maxStagedMoves = 1024

// statfs magic numbers of filesystems refused unless AllowNetworkMounts (§9.3).
var networkFS = map[int64]string{
	0x6969:     "nfs",
	0xFF534D42: "cifs",
	0x517B:     "smb",
	0xFE534D42: "smb2",
	0x65735546: "fuse",
}

const watchMask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_MOVE_SELF |
	unix.IN_ATTRIB | unix.IN_MODIFY | unix.IN_DELETE | unix.IN_DELETE_SELF

// Watcher delivers the events of one watch until its context ends or an
// error stops it.
type Watcher struct {
	root      string
	recursive bool
	pool      *Pool
	file      *os.File
	events    chan Event
	err       error // written by run before events is closed

	wds   map[int32]*dirWatch
	paths map[string]int32

	staged func(name string) (replaces, ok bool)
	// moves holds, by rename cookie, whether a temporary file that was
	// just renamed away replaces its target.
	moves map[uint32]bool
}

type dirWatch struct {
	rel string
	// announced holds names reported by a synthetic Create whose kernel
	// Create may still be queued; see the package comment.
	announced map[string]struct{}
}

// Start validates root and begins watching it. The watch stops when ctx ends.
func Start(ctx context.Context, root string, opt Options) (*Watcher, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("path %s: %w", root, ErrNotDir)
	}
	if !opt.AllowNetworkMounts {
		var st unix.Statfs_t
		if err := unix.Statfs(root, &st); err != nil {
			return nil, fmt.Errorf("statfs %s: %w", root, err)
		}
		if name, ok := networkFS[int64(st.Type)]; ok {
			return nil, fmt.Errorf("%w (%s): %s", ErrNetworkFS, name, root)
		}
	}
	if opt.Buffer <= 0 {
		opt.Buffer = 256
	}
	file, err := opt.Pool.get()
	if err != nil {
		return nil, fmt.Errorf("init inotify: %w", err)
	}
	w := &Watcher{
		root:      root,
		recursive: opt.Recursive,
		pool:      opt.Pool,
		file:      file,
		events:    make(chan Event, opt.Buffer),
		wds:       map[int32]*dirWatch{},
		paths:     map[string]int32{},
		staged:    opt.Staged,
		moves:     map[uint32]bool{},
	}
	if err := w.addRoot(); err != nil {
		w.release(true)
		return nil, err
	}
	go w.run(ctx)
	return w, nil
}

// release removes every watch and hands the instance back to the pool when
// reuse is set (the watch ended cleanly), else closes it.
func (w *Watcher) release(reuse bool) {
	if !reuse || w.pool == nil {
		w.file.Close()
		return
	}
	for wd := range w.wds {
		w.rmWatch(wd)
	}
	w.pool.put(w.file)
}

// Events is closed when the watch ends; Err then tells why.
func (w *Watcher) Events() <-chan Event { return w.events }

// Err is nil when the watch ended because its context did, else the reason.
// It is valid only after Events is closed.
func (w *Watcher) Err() error { return w.err }

func (w *Watcher) abs(rel string) string { return filepath.Join(w.root, rel) }

func (w *Watcher) addWatch(rel string, mask uint32) (int32, error) {
	rc, err := w.file.SyscallConn()
	if err != nil {
		return 0, err
	}
	var wd int
	var werr error
	if err := rc.Control(func(fd uintptr) {
		wd, werr = unix.InotifyAddWatch(int(fd), w.abs(rel), mask)
	}); err != nil {
		return 0, err
	}
	if werr != nil {
		return 0, os.NewSyscallError("inotify_add_watch", werr)
	}
	id := int32(wd)
	// The kernel hands back the existing wd for an inode already watched;
	// keep its announced set so no Create is reported twice.
	if dw, ok := w.wds[id]; ok {
		if w.paths[dw.rel] == id {
			delete(w.paths, dw.rel)
		}
		dw.rel = rel
	} else {
		w.wds[id] = &dirWatch{rel: rel}
	}
	w.paths[rel] = id
	return id, nil
}

func (w *Watcher) rmWatch(wd int32) {
	rc, err := w.file.SyscallConn()
	if err != nil {
		return
	}
	// The kernel may already have dropped the watch (EINVAL); either way
	// the IN_IGNORED that follows is for a wd we no longer know.
	_ = rc.Control(func(fd uintptr) { _, _ = unix.InotifyRmWatch(int(fd), uint32(wd)) })
}

func (w *Watcher) addRoot() error {
	// The root may be a symlink to a directory: follow it, like Stat did.
	if _, err := w.addWatch(".", watchMask|unix.IN_ONLYDIR); err != nil {
		return fmt.Errorf("watch %s: %w", w.root, err)
	}
	if !w.recursive {
		return nil
	}
	// Subdirectories present at start are watched silently: they are not news.
	_, err := w.addSubdirs(context.Background(), ".", false)
	return err
}

// addSubdirs watches every directory below rel and, when announce is set,
// emits a Create for every entry found. It returns false when ctx ended.
func (w *Watcher) addSubdirs(ctx context.Context, rel string, announce bool) (bool, error) {
	entries, err := os.ReadDir(w.abs(rel))
	if err != nil {
		if vanished(err) {
			return true, nil
		}
		return true, fmt.Errorf("read dir %s: %w", w.abs(rel), err)
	}
	parent := w.wds[w.paths[rel]]
	for _, e := range entries {
		if w.isStaged(e.Name()) {
			continue
		}
		child := filepath.Join(rel, e.Name())
		if announce {
			if parent != nil {
				if parent.announced == nil {
					parent.announced = map[string]struct{}{}
				}
				parent.announced[e.Name()] = struct{}{}
			}
			if !w.emit(ctx, Event{Name: child, Op: Create}) {
				return false, nil
			}
			// Content written before the watch existed was never reported;
			// clients waiting for a WRITE of a new file must still see one.
			if e.Type().IsRegular() {
				if fi, err := e.Info(); err == nil && fi.Size() > 0 {
					if !w.emit(ctx, Event{Name: child, Op: Write}) {
						return false, nil
					}
				}
			}
		}
		// DirEntry types come from lstat, so symlinked dirs are not entered.
		if !e.IsDir() {
			continue
		}
		ok, err := w.addTree(ctx, child, announce)
		if !ok || err != nil {
			return ok, err
		}
	}
	return true, nil
}

func (w *Watcher) addTree(ctx context.Context, rel string, announce bool) (bool, error) {
	if _, err := w.addWatch(rel, watchMask|unix.IN_ONLYDIR|unix.IN_DONT_FOLLOW); err != nil {
		if vanished(err) {
			return true, nil
		}
		return true, fmt.Errorf("watch %s: %w", w.abs(rel), err)
	}
	return w.addSubdirs(ctx, rel, announce)
}

// removeTree forgets rel and everything below it, for a directory moved away.
func (w *Watcher) removeTree(rel string) {
	prefix := rel + string(filepath.Separator)
	for p, wd := range w.paths {
		if p == rel || strings.HasPrefix(p, prefix) {
			w.rmWatch(wd)
			delete(w.paths, p)
			delete(w.wds, wd)
		}
	}
}

// vanished reports errors meaning the directory disappeared under us, which
// its parent's Remove/Rename event already reports.
func vanished(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP)
}

func (w *Watcher) isStaged(name string) bool {
	if w.staged == nil {
		return false
	}
	_, ok := w.staged(name)
	return ok
}

func (w *Watcher) emit(ctx context.Context, ev Event) bool {
	select {
	case w.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

func (w *Watcher) run(ctx context.Context) {
	defer close(w.events)
	// The end of ctx wakes the Read below through a deadline rather than
	// Close, so the instance can go back to the pool.
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = w.file.SetReadDeadline(time.Now())
		close(woken)
	})
	defer func() {
		if !stop() {
			<-woken // its deadline must be set before release clears it
		}
		w.release(w.err == nil)
	}()
	// Room for many events per read; one event is at most header+NAME_MAX+1.
	buf := make([]byte, 64*1024)
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			if ctx.Err() == nil {
				w.err = fmt.Errorf("read inotify events: %w", err)
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			raw := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(raw.Len)]
			off += unix.SizeofInotifyEvent + int(raw.Len)
			name := strings.TrimRight(string(nameBytes), "\x00")
			cont, err := w.handle(ctx, raw.Wd, raw.Mask, raw.Cookie, name)
			if err != nil {
				w.err = err
				return
			}
			if !cont {
				return
			}
		}
	}
}

// handle turns one kernel event into Events. It returns false to stop.
func (w *Watcher) handle(ctx context.Context, wd int32, mask, cookie uint32, name string) (bool, error) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		return false, ErrOverflow
	}
	dw, known := w.wds[wd]
	if !known {
		return true, nil // a watch we already dropped
	}
	if mask&unix.IN_IGNORED != 0 {
		delete(w.wds, wd)
		if w.paths[dw.rel] == wd {
			delete(w.paths, dw.rel)
		}
		if dw.rel == "." {
			return false, ErrRootGone
		}
		return true, nil
	}
	if name == "" {
		// An event about a watched directory itself. For subdirectories the
		// parent's watch reports the same change by name, so only the root's
		// own events are news.
		if dw.rel != "." {
			return true, nil
		}
		for _, op := range ops(mask) {
			if !w.emit(ctx, Event{Name: ".", Op: op}) {
				return false, nil
			}
		}
		return true, nil
	}

	rel := filepath.Join(dw.rel, name)
	suppressCreate := false
	if mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
		if _, ok := dw.announced[name]; ok {
			delete(dw.announced, name)
			suppressCreate = true
		}
	}
	if mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0 {
		delete(dw.announced, name)
	}
	if w.staged != nil {
		if replaces, ok := w.staged(name); ok {
			if mask&unix.IN_MOVED_FROM != 0 {
				if len(w.moves) >= maxStagedMoves {
					clear(w.moves)
				}
				w.moves[cookie] = replaces
			}
			return true, nil
		}
		if replaces, ok := w.moves[cookie]; ok && mask&unix.IN_MOVED_TO != 0 {
			delete(w.moves, cookie)
			upload := []Op{Create, Chmod}
			if replaces {
				upload = []Op{Chmod, Write}
			}
			for _, op := range upload {
				if op == Create && suppressCreate {
					continue
				}
				if !w.emit(ctx, Event{Name: rel, Op: op}) {
					return false, nil
				}
			}
			return true, nil
		}
	}
	for _, op := range ops(mask) {
		if op == Create && suppressCreate {
			continue
		}
		if !w.emit(ctx, Event{Name: rel, Op: op}) {
			return false, nil
		}
	}
	if !w.recursive || mask&unix.IN_ISDIR == 0 {
		return true, nil
	}
	switch {
	case mask&unix.IN_MOVED_FROM != 0:
		w.removeTree(rel)
	case mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 && !suppressCreate:
		// Even if the initial walk already watched it, scan again: entries
		// made before that watch existed are known only from the scan.
		return w.addTree(ctx, rel, true)
	}
	return true, nil
}

// ops maps an inotify mask to Ops in §9.3 order.
func ops(mask uint32) []Op {
	var out []Op
	if mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
		out = append(out, Create)
	}
	if mask&(unix.IN_MOVED_FROM|unix.IN_MOVE_SELF) != 0 {
		out = append(out, Rename)
	}
	if mask&unix.IN_ATTRIB != 0 {
		out = append(out, Chmod)
	}
	if mask&unix.IN_MODIFY != 0 {
		out = append(out, Write)
	}
	if mask&(unix.IN_DELETE|unix.IN_DELETE_SELF) != 0 {
		out = append(out, Remove)
	}
	return out
}
