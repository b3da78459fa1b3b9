package portscan

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Literal text captured from a 6.18 kernel (x86-64, little-endian).
const tcp4Text = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1606 1 000000003dd855e9 100 0 0 10 0                      
   1: 0100007F:1F94 00000000:0000 0A 00000000:00000001 00:00000000 00000000     0        0 22825 2 0000000077e57bd6 100 0 0 10 0                     
   2: 0100007F:9078 0100007F:1F94 01 00000000:00000000 00:00000000 00000000     0        0 22826 2 0000000074cb611d 20 0 0 10 -1                     
   3: 0100007F:1F94 0100007F:9078 01 00000000:00000000 00:00000000 00000000     0        0 0 1 00000000411b8b81 20 0 0 10 -1                         
   4: 1500FEA9:C383 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 30001 1 0000000000000000 100 0 0 10 0
`

const tcp6Text = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22824 1 000000005ba0103a 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22823 1 00000000734009cb 100 0 0 10 0
   2: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22822 1 00000000689c9298 100 0 0 10 0
   3: 00000000000000000000000001000000:1F91 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 22900 1 0000000000000000 20 0 0 10 -1
   4: 0000000000000000FFFF00001500FEA9:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22950 1 0000000000000000 100 0 0 10 0
`

func TestParse(t *testing.T) {
	if !littleEndian() {
		t.Skip("literal lines were captured on a little-endian kernel; this host is big-endian")
	}
	tests := []struct {
		name string
		text string
		v6   bool
		want []Listener
	}{
		{"tcp4", tcp4Text, false, []Listener{
			{Addr: netip.MustParseAddr("0.0.0.0"), Port: 2024, Inode: 1606},
			{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8084, Inode: 22825},
			{Addr: netip.MustParseAddr("169.254.0.21"), Port: 50051, Inode: 30001},
		}},
		{"tcp6", tcp6Text, true, []Listener{
			{Addr: netip.MustParseAddr("::"), Port: 8083, Inode: 22824, V6: true},
			{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8082, Inode: 22823, V6: true}, // ::ffff:127.0.0.1
			{Addr: netip.MustParseAddr("::1"), Port: 8081, Inode: 22822, V6: true},
			{Addr: netip.MustParseAddr("169.254.0.21"), Port: 80, Inode: 22950, V6: true},
		}},
		{"header only", "  sl  local_address rem_address   st\n", false, nil},
		{"empty", "", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.text), tt.v6)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Parse:\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	header := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	for name, line := range map[string]string{
		"short line":     "   0: 0100007F:1F94 00000000:0000 0A\n",
		"bad state":      "   0: 0100007F:1F94 00000000:0000 ZZ 00000000:00000000 00:00000000 00000000 0 0 1 1\n",
		"bad port":       "   0: 0100007F:XXXX 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n",
		"no colon":       "   0: 0100007F1F94 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n",
		"odd address":    "   0: 0100007:1F94 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n",
		"address length": "   0: 0100007F00:1F94 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n",
		"bad inode":      "   0: 0100007F:1F94 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 x 1\n",
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := Parse([]byte(header+line), false); err == nil {
				t.Errorf("Parse accepted %q: %v", line, got)
			}
		})
	}
}

func TestLoopbackFilter(t *testing.T) {
	if !littleEndian() {
		t.Skip("literal lines were captured on a little-endian kernel; this host is big-endian")
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"tcp": tcp4Text, "tcp6": tcp6Text} {
		if err := os.WriteFile(filepath.Join(root, "net", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Scanner{ProcRoot: root}.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	want := []Listener{
		{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8084, Inode: 22825},
		{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8082, Inode: 22823, V6: true},
		{Addr: netip.MustParseAddr("::1"), Port: 8081, Inode: 22822, V6: true},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Loopback:\n got %v\nwant %v", got, want)
	}
	if _, err := (Scanner{ProcRoot: t.TempDir()}).Loopback(); err == nil {
		t.Error("Loopback with no socket tables succeeded")
	}
}

// TestRealKernel opens real listeners and finds exactly the loopback ones.
func TestRealKernel(t *testing.T) {
	v4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer v4.Close()
	wild, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer wild.Close()
	var v6 net.Listener
	if l, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		v6 = l
		defer v6.Close()
	} else if !strings.Contains(err.Error(), "assign") {
		t.Fatal(err)
	}

	got, err := Scanner{ProcRoot: "/proc"}.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	has := func(addr net.Addr) bool {
		ap := addr.(*net.TCPAddr).AddrPort()
		return slices.ContainsFunc(got, func(l Listener) bool {
			return l.Addr == ap.Addr().Unmap() && l.Port == ap.Port() && l.Inode != 0
		})
	}
	if !has(v4.Addr()) {
		t.Errorf("127.0.0.1 listener %v missing from %v", v4.Addr(), got)
	}
	if v6 != nil && !has(v6.Addr()) {
		t.Errorf("::1 listener %v missing from %v", v6.Addr(), got)
	}
	wport := uint16(wild.Addr().(*net.TCPAddr).Port)
	if slices.ContainsFunc(got, func(l Listener) bool { return l.Port == wport }) {
		t.Errorf("wildcard listener on port %d reported as loopback: %v", wport, got)
	}
	v4.Close()
	got, err = Scanner{ProcRoot: "/proc"}.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	if has(v4.Addr()) {
		t.Errorf("closed listener %v still reported", v4.Addr())
	}
}

func littleEndian() bool { return binary.NativeEndian.Uint16([]byte{1, 0}) == 1 }
