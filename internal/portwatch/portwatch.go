// Package portwatch turns the TCP listeners of the sandbox into open and
// close events: it scans on an interval while anyone subscribes (netlink
// sock_diag, or internal/portscan's /proc scan where that is missing) and
// diffs each scan against the last. It knows nothing of the
// wire; envdapi's Ports service streams its events.
package portwatch

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/envd-dev/envd/internal/portscan"
)

// DefaultInterval is the scan period while anyone watches: a port that
// opens is announced at most this late. A sock_diag scan costs about 65 µs
// of CPU here (a /proc/net/tcp scan 4.5 ms; BenchmarkScan), so 0.1 % of a
// core.
const DefaultInterval = 50 * time.Millisecond

// subQueue bounds the events a slow subscriber may hold; beyond it the
// subscription ends with ErrOverflow, never losing events silently.
const subQueue = 1024

// ErrOverflow ends a subscription that fell subQueue events behind.
var ErrOverflow = errors.New("port events overflowed: the client read too slowly")

// State says whether a port opened or closed.
type State int

const (
	Open State = iota + 1
	Closed
)

// Event is one listener opening or closing.
type Event struct {
	State     State
	Addr      netip.Addr
	Port      uint16
	V6        bool // the socket is IPv6 (Addr may still be v4-mapped, shown unmapped)
	Pid       int  // 0 when the owner could not be found
	Cmdline   string
	Forwarded bool // envd forwards the port to the VM's external address
}

type key struct {
	addr netip.Addr
	port uint16
	v6   bool
}

// Watcher is shared by every subscriber. Set Scan; the rest is optional.
type Watcher struct {
	Scan func() ([]portscan.Listener, error)
	// ProcRoot is where owners (pid, command line) are looked up; "" skips
	// the lookup.
	ProcRoot string
	// SelfPid hides the listeners of this process (envd's own port and its
	// forwarding proxies): they are not the sandbox's services.
	SelfPid int
	// Forwarded lists the ports envd forwards now; nil: none.
	Forwarded func() []uint16
	Interval  time.Duration // 0: DefaultInterval
	Log       *slog.Logger

	mu      sync.Mutex
	subs    map[*Sub]struct{}
	current map[key]Event
	stop    chan struct{} // closed to stop the poller; nil when none runs
}

// Sub receives events after the snapshot Subscribe returned with it. Err
// is set when C closes because the subscriber overflowed.
type Sub struct {
	C    <-chan Event
	ch   chan Event
	w    *Watcher
	once sync.Once
	err  error
	done chan struct{}
}

// Done is closed when the subscription ended by overflow.
func (s *Sub) Done() <-chan struct{} { return s.done }

// Err is why the subscription ended, once Done is closed.
func (s *Sub) Err() error { return s.err }

// Subscribe scans at once and returns the listeners open now, then a
// subscription for what changes after. Scanning runs while any
// subscription is open.
func (w *Watcher) Subscribe() ([]Event, *Sub, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stop == nil {
		if err := w.scanLocked(); err != nil {
			return nil, nil, err
		}
		w.stop = make(chan struct{})
		go w.poll(w.stop)
	}
	s := &Sub{ch: make(chan Event, subQueue), w: w, done: make(chan struct{})}
	s.C = s.ch
	if w.subs == nil {
		w.subs = map[*Sub]struct{}{}
	}
	w.subs[s] = struct{}{}
	snap := make([]Event, 0, len(w.current))
	for _, e := range w.current {
		snap = append(snap, e)
	}
	slices.SortFunc(snap, func(a, b Event) int {
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return a.Addr.Compare(b.Addr)
	})
	return snap, s, nil
}

// Close ends the subscription; the last one stops the scanning.
func (s *Sub) Close() {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dropLocked(s, nil)
}

func (w *Watcher) dropLocked(s *Sub, err error) {
	if _, ok := w.subs[s]; !ok {
		return
	}
	delete(w.subs, s)
	s.once.Do(func() { s.err = err; close(s.done) })
	if len(w.subs) == 0 && w.stop != nil {
		close(w.stop)
		w.stop = nil
		w.current = nil // the next Subscribe scans afresh
	}
}

func (w *Watcher) poll(stop chan struct{}) {
	interval := w.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		w.mu.Lock()
		if w.stop == stop {
			if err := w.scanLocked(); err != nil && w.Log != nil {
				w.Log.Warn("scan listening ports", "err", err)
			}
		}
		w.mu.Unlock()
	}
}

// scanLocked diffs a fresh scan against the last and hands each change to
// every subscriber.
func (w *Watcher) scanLocked() error {
	ls, err := w.Scan()
	if err != nil {
		return err
	}
	var fwd []uint16
	if w.Forwarded != nil {
		fwd = w.Forwarded()
	}
	seen := make(map[key]bool, len(ls))
	next := make(map[key]Event, len(ls))
	var opened []Event
	var owners map[uint64]int
	for _, l := range ls {
		k := key{l.Addr, l.Port, l.V6}
		if seen[k] {
			continue // SO_REUSEPORT: several sockets, one port
		}
		seen[k] = true
		if e, ok := w.current[k]; ok {
			e.Forwarded = l.Loopback() && slices.Contains(fwd, l.Port)
			next[k] = e
			continue
		}
		e := Event{State: Open, Addr: l.Addr, Port: l.Port, V6: l.V6, Forwarded: l.Loopback() && slices.Contains(fwd, l.Port)}
		if w.ProcRoot != "" {
			if owners == nil {
				owners = w.socketOwners()
			}
			e.Pid = owners[l.Inode]
			if e.Pid != 0 {
				e.Cmdline = w.cmdline(e.Pid)
			}
		}
		if w.SelfPid != 0 && e.Pid == w.SelfPid {
			continue
		}
		next[k] = e
		opened = append(opened, e)
	}
	var closed []Event
	for k, e := range w.current {
		if _, ok := next[k]; !ok {
			e.State = Closed
			closed = append(closed, e)
		}
	}
	w.current = next
	for _, e := range append(closed, opened...) {
		for s := range w.subs {
			select {
			case s.ch <- e:
			default:
				w.dropLocked(s, ErrOverflow)
			}
		}
	}
	return nil
}

// socketOwners maps socket inodes to the pid holding them, from the fd
// links under ProcRoot. Only run when a port opened.
func (w *Watcher) socketOwners() map[uint64]int {
	out := map[uint64]int{}
	dirs, _ := filepath.Glob(filepath.Join(w.ProcRoot, "[0-9]*", "fd"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err != nil {
			continue
		}
		ents, err := os.ReadDir(d)
		if err != nil {
			continue // exited, or not ours to read
		}
		for _, e := range ents {
			link, err := os.Readlink(filepath.Join(d, e.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
			// A forked child shares its parent's socket: name the parent,
			// the lower pid short of a wrap-around.
			if old, ok := out[ino]; err == nil && (!ok || pid < old) {
				out[ino] = pid
			}
		}
	}
	return out
}

func (w *Watcher) cmdline(pid int) string {
	b, err := os.ReadFile(filepath.Join(w.ProcRoot, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// Subscribers counts the open subscriptions; scanning runs while it is not 0.
func (w *Watcher) Subscribers() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.subs)
}
