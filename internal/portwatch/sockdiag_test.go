package portwatch

import (
	"net"
	"slices"
	"testing"

	"github.com/envd-dev/envd/internal/portscan"
)

func find(ls []portscan.Listener, port uint16) *portscan.Listener {
	i := slices.IndexFunc(ls, func(l portscan.Listener) bool { return l.Port == port })
	if i < 0 {
		return nil
	}
	return &ls[i]
}

// sock_diag sees the listeners the /proc scan sees, with the same inodes.
func TestSockDiagMatchesProcScan(t *testing.T) {
	v4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer v4.Close()
	v6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer v6.Close()
	diag, err := SockDiag()
	if err != nil {
		t.Fatal(err)
	}
	scan, err := portscan.Scanner{ProcRoot: "/proc"}.All()
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range []net.Listener{v4, v6} {
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		d, s := find(diag, port), find(scan, port)
		if d == nil || s == nil || *d != *s {
			t.Fatalf("port %d: sock_diag %+v, /proc %+v", port, d, s)
		}
	}
	// A closed listener is gone from both.
	port := uint16(v4.Addr().(*net.TCPAddr).Port)
	v4.Close()
	if diag, err = SockDiag(); err != nil || find(diag, port) != nil {
		t.Fatalf("closed port %d still listed: %v", port, err)
	}
}

// One scan each way, on the same machine in the same run: what a poll costs.
func BenchmarkScan(b *testing.B) {
	b.Run("proc", func(b *testing.B) {
		s := portscan.Scanner{ProcRoot: "/proc"}
		for b.Loop() {
			if _, err := s.All(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sockdiag", func(b *testing.B) {
		for b.Loop() {
			if _, err := SockDiag(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
