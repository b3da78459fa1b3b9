package portfwd

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/portscan"
)

// BenchmarkThroughput streams 1 MiB writes to a sink server, once directly
// over loopback (the machine's own figure) and once through the forwarder;
// compare the MB/s of the two sub-benchmarks.
func BenchmarkThroughput(b *testing.B) {
	sink, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	port := uint16(sink.Addr().(*net.TCPAddr).Port)
	f := &Forwarder{
		Addr:     netip.MustParseAddr("127.0.0.2"),
		Interval: 10 * time.Millisecond,
		Log:      testLogger(nil),
		Scan: func() ([]portscan.Listener, error) {
			return []portscan.Listener{{Addr: netip.MustParseAddr("127.0.0.1"), Port: port}}, nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for len(f.Ports()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	for _, tc := range []struct{ name, addr string }{
		{"direct", sink.Addr().String()},
		{"forwarded", net.JoinHostPort("127.0.0.2", strconv.Itoa(int(port)))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := net.Dial("tcp", tc.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
