package portfwd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/portscan"
	"github.com/envd-dev/envd/internal/testkit"
)

// helperEnv turns the test binary into a forwarder that runs inside a network
// namespace (see TestNetns); its value is the external address.
const helperEnv = "ENVD_PORTFWD_HELPER_ADDR"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		os.Exit(runHelper(addr))
	}
	os.Exit(m.Run())
}

// echoServer answers every connection by echoing it, until closed.
type echoServer struct {
	ln net.Listener
}

func newEcho(network, addr string) (*echoServer, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return &echoServer{ln: ln}, nil
}

func (e *echoServer) port() uint16 { return uint16(e.ln.Addr().(*net.TCPAddr).Port) }

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write through proxy: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read through proxy: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("echo through proxy = %q, want %q", buf, msg)
	}
}

func testLogger(testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// TestForwardOnLoopbackAlias runs without namespaces: the "external" address
// is 127.0.0.2 and the scan is injected, so only this test's listener counts.
func TestForwardOnLoopbackAlias(t *testing.T) {
	srv, err := newEcho("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.ln.Close()
	var mu sync.Mutex
	listening := true
	f := &Forwarder{
		Addr:     netip.MustParseAddr("127.0.0.2"),
		Interval: 10 * time.Millisecond,
		Log:      testLogger(t),
		Scan: func() ([]portscan.Listener, error) {
			mu.Lock()
			defer mu.Unlock()
			if !listening {
				return nil, nil
			}
			return []portscan.Listener{
				{Addr: netip.MustParseAddr("127.0.0.1"), Port: srv.port(), Inode: 1},
				{Addr: netip.MustParseAddr("0.0.0.0"), Port: 1, Inode: 2}, // wildcard: never forwarded
			}, nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		f.Run(ctx)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()

	ext := net.JoinHostPort("127.0.0.2", strconv.Itoa(int(srv.port())))
	var live net.Conn
	testkit.Eventually(t, "port forwarded on 127.0.0.2", func() bool {
		c, err := net.Dial("tcp", ext)
		if err != nil {
			return false
		}
		live = c
		return true
	})
	defer live.Close()
	roundTrip(t, live, "hello")
	if got := f.Ports(); len(got) != 1 || got[0] != srv.port() {
		t.Fatalf("Ports = %v, want [%d]", got, srv.port())
	}

	f.Pause()
	if !f.Paused() || len(f.Ports()) != 0 {
		t.Fatalf("after Pause: paused=%v ports=%v", f.Paused(), f.Ports())
	}
	if c, err := net.Dial("tcp", ext); err == nil {
		c.Close()
		t.Fatal("paused forwarder still accepts connections")
	}
	roundTrip(t, live, "survives pause")
	f.Resume()
	testkit.Eventually(t, "forwarding back after Resume", func() bool { return len(f.Ports()) == 1 })
	roundTrip(t, live, "survives resume")

	mu.Lock()
	listening = false
	mu.Unlock()
	testkit.Eventually(t, "forward dropped once the listener is gone", func() bool { return len(f.Ports()) == 0 })
	if c, err := net.Dial("tcp", ext); err == nil {
		c.Close()
		t.Fatal("forward still accepts after its listener went away")
	}

	cancel()
	<-done
	live.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := live.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("live connection not closed by shutdown: %v", err)
	}
}

func TestTargetsPreferIPv4(t *testing.T) {
	ext := netip.MustParseAddr("10.0.0.2")
	got := targets([]portscan.Listener{
		{Addr: netip.MustParseAddr("::1"), Port: 80, V6: true},
		{Addr: netip.MustParseAddr("127.0.0.1"), Port: 80},
		{Addr: netip.MustParseAddr("::1"), Port: 81, V6: true},
		{Addr: netip.MustParseAddr("0.0.0.0"), Port: 82},
		{Addr: netip.MustParseAddr("10.0.0.2"), Port: 83},
		{Addr: netip.MustParseAddr("127.0.0.5"), Port: 84},
		{Addr: netip.MustParseAddr("127.0.0.1"), Port: 84},
	}, ext)
	want := map[uint16]netip.AddrPort{
		80: netip.MustParseAddrPort("127.0.0.1:80"),
		81: netip.MustParseAddrPort("[::1]:81"),
		84: netip.MustParseAddrPort("127.0.0.1:84"),
	}
	if len(got) != len(want) {
		t.Fatalf("targets = %v, want %v", got, want)
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("port %d: target %v, want %v", p, got[p], w)
		}
	}
}

// runHelper is the forwarder process inside the namespace. It reads commands
// on stdin and answers each with one line on stdout:
//
//	open  -> listens on 127.0.0.1:0 with an echo server, answers the port
//	close -> closes that listener (accepted connections stay open)
//	pause / resume -> Forwarder.Pause / Resume
func runHelper(addr string) int {
	f := &Forwarder{
		Addr:     netip.MustParseAddr(addr),
		Interval: 20 * time.Millisecond,
		Scan:     portscan.Scanner{ProcRoot: "/proc"}.Loopback,
		Log:      slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Run(ctx)
	var srv *echoServer
	in := bufio.NewScanner(os.Stdin)
	fmt.Println("ready")
	for in.Scan() {
		switch in.Text() {
		case "open":
			s, err := newEcho("tcp4", "127.0.0.1:0")
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			srv = s
			fmt.Println(s.port())
		case "close":
			srv.ln.Close()
			fmt.Println("closed")
		case "pause":
			f.Pause()
			fmt.Println("paused")
		case "resume":
			f.Resume()
			fmt.Println("resumed")
		}
	}
	return 0
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestNetns: two namespaces joined by a veth pair with a private /30. The
// forwarder runs in "vm" as its own process (re-exec of this binary through
// ip netns exec); the test dials from "host".
func TestNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2) to create network namespaces")
	}
	suffix := strconv.Itoa(os.Getpid())
	host, vm := "envdfwd-h"+suffix, "envdfwd-v"+suffix
	for _, ns := range []string{host, vm} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "-n", host, "link", "add", "veth-h", "type", "veth", "peer", "name", "veth-v", "netns", vm)
	run(t, "ip", "-n", host, "addr", "add", "10.213.7.1/30", "dev", "veth-h")
	run(t, "ip", "-n", vm, "addr", "add", "10.213.7.2/30", "dev", "veth-v")
	for _, ns := range []string{host, vm} {
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", host, "link", "set", "veth-h", "up")
	run(t, "ip", "-n", vm, "link", "set", "veth-v", "up")

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", vm, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=10.213.7.2")
	cmd.Stderr = os.Stderr
	// No Pdeathsig: it fires when the forking thread exits, and DialIn ends
	// threads on purpose. Cleanup kills the helper instead.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := bufio.NewScanner(stdout)
	ask := func(cmd string) string {
		t.Helper()
		if cmd != "" {
			if _, err := io.WriteString(stdin, cmd+"\n"); err != nil {
				t.Fatalf("send %q to helper: %v", cmd, err)
			}
		}
		if !lines.Scan() {
			t.Fatalf("helper ended before answering %q: %v", cmd, lines.Err())
		}
		return lines.Text()
	}
	if got := ask(""); got != "ready" {
		t.Fatalf("helper said %q", got)
	}
	port := ask("open")
	if _, err := strconv.Atoi(port); err != nil {
		t.Fatalf("helper open: %s", port)
	}
	hostNS := "/run/netns/" + host
	ext := net.JoinHostPort("10.213.7.2", port)

	// Before forwarding, the loopback listener is not reachable from outside
	// (connection refused); afterwards it is.
	var live net.Conn
	testkit.Eventually(t, "127.0.0.1:"+port+" in the vm namespace reachable on "+ext, func() bool {
		c, err := testkit.DialIn(hostNS, ext)
		if err != nil {
			return false
		}
		live = c
		return true
	})
	defer live.Close()
	roundTrip(t, live, "through the veth")

	if got := ask("pause"); got != "paused" {
		t.Fatalf("pause: %s", got)
	}
	if c, err := testkit.DialIn(hostNS, ext); err == nil {
		c.Close()
		t.Fatal("paused forwarder still accepts")
	}
	roundTrip(t, live, "live across pause")
	if got := ask("resume"); got != "resumed" {
		t.Fatalf("resume: %s", got)
	}
	testkit.Eventually(t, "reachable again after resume", func() bool {
		c, err := testkit.DialIn(hostNS, ext)
		if err == nil {
			roundTrip(t, c, "new")
			c.Close()
		}
		return err == nil
	})
	roundTrip(t, live, "live across resume")

	if got := ask("close"); got != "closed" {
		t.Fatalf("close: %s", got)
	}
	testkit.Eventually(t, ext+" refused once the server closed", func() bool {
		c, err := testkit.DialIn(hostNS, ext)
		if err == nil {
			c.Close()
			return false
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	})
	// The server closed its listener, not its connections: the proxied one
	// keeps working.
	roundTrip(t, live, "live after the listener closed")
}
