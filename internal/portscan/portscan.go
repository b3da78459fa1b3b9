// Package portscan finds TCP listeners: those bound to loopback only, which
// the port forwarder exposes on the VM's external address (§10), and all of
// them for port events. Parse is a pure
// function over /proc/net/tcp{,6} text; Scanner reads those files under an
// injected proc root. Imported by portfwd, portwatch and daemon.
package portscan

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// stateListen is TCP_LISTEN in the kernel's tcp_states.h, printed as "0A".
const stateListen = 0x0A

// Listener is one listening socket.
type Listener struct {
	Addr  netip.Addr // unmapped: a v4-mapped IPv6 address appears as IPv4
	Port  uint16
	Inode uint64
	V6    bool // read from tcp6, so dial it with an IPv6 socket when Addr is IPv6
}

// Loopback reports whether only local clients can reach the listener, which is
// what makes it worth forwarding: wildcard listeners are reachable already.
func (l Listener) Loopback() bool { return l.Addr.IsLoopback() }

// Parse reads the text of /proc/net/tcp or /proc/net/tcp6 and returns every
// socket in LISTEN state. Lines it cannot read make it fail rather than hide
// a listener.
func Parse(text []byte, v6 bool) ([]Listener, error) {
	var out []Listener
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 0, 512), 64*1024)
	first := true
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if first {
			first = false
			if strings.HasPrefix(line, "sl") {
				continue
			}
		}
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
		if len(f) < 10 {
			return nil, fmt.Errorf("parse socket line %q: %d fields", line, len(f))
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("parse state in %q: %w", line, err)
		}
		if st != stateListen {
			continue
		}
		addr, port, err := parseEndpoint(f[1])
		if err != nil {
			return nil, fmt.Errorf("parse local address in %q: %w", line, err)
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse inode in %q: %w", line, err)
		}
		out = append(out, Listener{Addr: addr, Port: port, Inode: inode, V6: v6})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read socket table: %w", err)
	}
	return out, nil
}

// parseEndpoint decodes "0100007F:1F90". The kernel prints the address as
// 32-bit words in host byte order, the port as plain big hex.
func parseEndpoint(s string) (netip.Addr, uint16, error) {
	host, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, errors.New("missing ':'")
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("port: %w", err)
	}
	raw, err := hex.DecodeString(host)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("address: %w", err)
	}
	if len(raw) != 4 && len(raw) != 16 {
		return netip.Addr{}, 0, fmt.Errorf("address of %d bytes", len(raw))
	}
	var b [16]byte
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(b[i:], binary.NativeEndian.Uint32(raw[i:i+4]))
	}
	if len(raw) == 4 {
		return netip.AddrFrom4([4]byte(b[:4])), uint16(port), nil
	}
	return netip.AddrFrom16(b).Unmap(), uint16(port), nil
}

// Scanner reads the socket tables of the network namespace of the calling
// thread (/proc/net is /proc/self/net).
type Scanner struct {
	ProcRoot string // "/proc" in production
}

// Loopback returns the listeners reachable only from inside the machine.
func (s Scanner) Loopback() ([]Listener, error) {
	all, err := s.All()
	if err != nil {
		return nil, err
	}
	var out []Listener
	for _, l := range all {
		if l.Loopback() {
			out = append(out, l)
		}
	}
	return out, nil
}

// All returns every TCP listener, IPv4 and IPv6.
func (s Scanner) All() ([]Listener, error) {
	var out []Listener
	for _, t := range []struct {
		name string
		v6   bool
	}{{"tcp", false}, {"tcp6", true}} {
		text, err := os.ReadFile(filepath.Join(s.ProcRoot, "net", t.name))
		if errors.Is(err, os.ErrNotExist) && t.v6 {
			continue // kernel without IPv6
		}
		if err != nil {
			return nil, fmt.Errorf("read socket table: %w", err)
		}
		ls, err := Parse(text, t.v6)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", t.name, err)
		}
		out = append(out, ls...)
	}
	return out, nil
}
