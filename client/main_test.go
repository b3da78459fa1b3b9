package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"

	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/daemon"
)

// exampleURL is the daemon the Example functions talk to: examples get no
// *testing.T, so TestMain starts one for them (the tests start their own).
var exampleURL string

// listenEnv makes the test binary a listener process instead: envd leaves
// its own sockets out of port events, so a port must be another process's.
const listenEnv = "CLIENT_TEST_LISTEN"

func TestMain(m *testing.M) {
	if addr := os.Getenv(listenEnv); addr != "" {
		os.Exit(listen(addr))
	}
	os.Exit(run(m))
}

// listen holds a listener on addr until stdin ends.
func listen(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ln.Close()
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

func run(m *testing.M) int {
	cfg, err := config.Parse([]string{"-isnotfc", "-no-cgroups"}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg.ListenHost = "127.0.0.1"
	d, err := daemon.New(cfg, daemon.Build{Version: "0.7.0", Commit: "test"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, ln) }()
	exampleURL = "http://" + ln.Addr().String()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "example daemon:", err)
		return 1
	}
	return code
}
