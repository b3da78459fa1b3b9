// Package portfwd makes TCP services that listen on loopback only reachable
// on the VM's external address (§10), with an in-process proxy: one listener
// per forwarded port and two copy goroutines per connection, so a rootfs needs
// no socat and envd spawns no process per port. Used by daemon only.
package portfwd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/envd-dev/envd/internal/portscan"
)

// FallbackAddr is the guest eth0 address under Wrenn and E2B.
func FallbackAddr() netip.Addr { return netip.AddrFrom4([4]byte{169, 254, 0, 21}) }

// dialTimeout bounds a dial to a loopback listener, which answers at once
// unless its backlog is full.
const dialTimeout = 5 * time.Second

// Forwarder scans for loopback-only listeners and proxies each one's port
// from Addr. The zero value is not usable; set Scan and Log.
type Forwarder struct {
	// Addr is the external address; zero means ExternalAddr, looked up at
	// each scan because a VM's eth0 may come up after envd starts.
	Addr     netip.Addr
	Interval time.Duration // between scans; zero means 1 s, as §10
	Scan     func() ([]portscan.Listener, error)
	Log      *slog.Logger

	mu       sync.Mutex
	paused   bool
	wake     chan struct{} // Resume asks for a scan now
	forwards map[uint16]*forward
	conns    map[net.Conn]struct{} // live proxied connections, both sides
	failed   map[uint16]bool       // ports whose bind failure was logged once
	closed   bool
}

type forward struct {
	ln     net.Listener
	mu     sync.Mutex
	target netip.AddrPort
}

// Run scans until ctx ends, then closes every listener and live connection.
func (f *Forwarder) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.wake == nil {
		f.wake = make(chan struct{}, 1)
	}
	wake := f.wake
	f.mu.Unlock()
	interval := f.Interval
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	defer f.shutdown()
	for {
		f.scanOnce()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-wake:
		}
	}
}

// Pause stops scanning and closes every forwarding listener before it
// returns, for /snapshot/prepare. Live proxied connections are left alone:
// cutting them would lose data of clients that are still talking.
func (f *Forwarder) Pause() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = true
	for port, fw := range f.forwards {
		fw.ln.Close()
		delete(f.forwards, port)
	}
}

// Resume restarts scanning at once; a no-op when not paused.
func (f *Forwarder) Resume() {
	f.mu.Lock()
	was := f.paused
	f.paused = false
	if f.wake == nil {
		f.wake = make(chan struct{}, 1)
	}
	wake := f.wake
	f.mu.Unlock()
	if was {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

// Paused reports whether Pause was called without a Resume after it.
func (f *Forwarder) Paused() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.paused
}

// Ports lists the ports forwarded now.
func (f *Forwarder) Ports() []uint16 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]uint16, 0, len(f.forwards))
	for p := range f.forwards {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func (f *Forwarder) scanOnce() {
	f.mu.Lock()
	paused := f.paused || f.closed
	f.mu.Unlock()
	if paused {
		return
	}
	ls, err := f.Scan()
	if err != nil {
		f.Log.Warn("scan listening ports", "err", err)
		return
	}
	addr := f.Addr
	if !addr.IsValid() {
		addr = ExternalAddr()
	}
	want := targets(ls, addr)

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.paused || f.closed {
		return
	}
	if f.forwards == nil {
		f.forwards = map[uint16]*forward{}
		f.conns = map[net.Conn]struct{}{}
		f.failed = map[uint16]bool{}
	}
	for port, fw := range f.forwards {
		target, ok := want[port]
		if !ok {
			fw.ln.Close()
			delete(f.forwards, port)
			f.Log.Info("stop forwarding", "port", port)
			continue
		}
		fw.mu.Lock()
		fw.target = target
		fw.mu.Unlock()
	}
	for port := range f.failed {
		if _, ok := want[port]; !ok {
			delete(f.failed, port)
		}
	}
	for port, target := range want {
		if _, ok := f.forwards[port]; ok {
			continue
		}
		// Listening under f.mu is fine: bind on a local address does not block.
		ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, port).String())
		if err != nil {
			if !f.failed[port] {
				f.failed[port] = true
				f.Log.Warn("forward port", "port", port, "addr", addr, "err", err)
			}
			continue
		}
		delete(f.failed, port)
		fw := &forward{ln: ln, target: target}
		f.forwards[port] = fw
		f.Log.Info("forward port", "port", port, "from", ln.Addr().String(), "to", target.String())
		go f.accept(fw)
	}
}

// targets picks one loopback listener per port, preferring IPv4, and skips
// listeners on the external address itself (envd's own).
func targets(ls []portscan.Listener, external netip.Addr) map[uint16]netip.AddrPort {
	want := map[uint16]netip.AddrPort{}
	for _, l := range ls {
		if !l.Loopback() || l.Addr == external {
			continue
		}
		cur, ok := want[l.Port]
		if !ok || (!cur.Addr().Is4() && l.Addr.Is4()) || (cur.Addr().Is4() == l.Addr.Is4() && l.Addr.Less(cur.Addr())) {
			want[l.Port] = netip.AddrPortFrom(l.Addr, l.Port)
		}
	}
	return want
}

func (f *Forwarder) accept(fw *forward) {
	var delay time.Duration
	for {
		c, err := fw.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of fds or memory: wait for connections to end rather
			// than give up the port while it is still listed as forwarded.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			f.Log.Warn("accept forwarded connection", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		fw.mu.Lock()
		target := fw.target
		fw.mu.Unlock()
		go f.proxy(c, target)
	}
}

func (f *Forwarder) proxy(client net.Conn, target netip.AddrPort) {
	if !f.track(client) {
		client.Close()
		return
	}
	defer f.untrack(client)
	defer client.Close()
	d := net.Dialer{Timeout: dialTimeout}
	server, err := d.Dial("tcp", target.String())
	if err != nil {
		f.Log.Debug("dial forwarded target", "to", target.String(), "err", err)
		return
	}
	if !f.track(server) {
		server.Close()
		return
	}
	defer f.untrack(server)
	defer server.Close()
	done := make(chan struct{})
	go func() {
		pipe(server, client)
		close(done)
	}()
	pipe(client, server)
	<-done
}

// pipe copies until src ends, then half-closes dst so the peer sees EOF
// while the other direction may still be sending.
func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		dst.Close()
	}
}

func (f *Forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	if f.conns == nil {
		f.conns = map[net.Conn]struct{}{}
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

func (f *Forwarder) shutdown() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for port, fw := range f.forwards {
		fw.ln.Close()
		delete(f.forwards, port)
	}
	for c := range f.conns {
		c.Close()
	}
}

// ExternalAddr is the first IPv4 address of an up, non-loopback interface,
// or FallbackAddr when there is none yet.
func ExternalAddr() netip.Addr {
	ifs, err := net.Interfaces()
	if err != nil {
		return FallbackAddr()
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err == nil && pfx.Addr().Is4() {
				return pfx.Addr()
			}
		}
	}
	return FallbackAddr()
}
