// Package envdtest runs a real envd daemon inside a test process, on a
// loopback port, so tests drive it over the wire with real clients.
package envdtest

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/daemon"
)

// Server is a running daemon. It stops when the test ends.
type Server struct {
	URL    string
	Daemon *daemon.Daemon
	Client *http.Client // HTTP/1.1, as the SDKs and the host agent use
}

// Start runs a daemon configured as with --isnotfc --no-cgroups on
// 127.0.0.1:0; mutate adjusts the config before it starts.
func Start(t testing.TB, mutate ...func(*config.Config)) *Server {
	t.Helper()
	cfg, err := config.Parse([]string{"-isnotfc", "-no-cgroups"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ListenHost = "127.0.0.1"
	for _, m := range mutate {
		m(&cfg)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := daemon.New(cfg, daemon.Build{Version: "0.7.0", Commit: "test"}, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, ln) }()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(func() {
		// A dialled but never used client connection holds a graceful
		// shutdown for 5 s (net/http treats new conns as busy until then).
		tr.CloseIdleConnections()
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("daemon did not shut down within 10s")
		}
	})
	return &Server{
		URL:    "http://" + ln.Addr().String(),
		Daemon: d,
		Client: &http.Client{Transport: tr},
	}
}

// testWriter sends daemon logs to the test log, so they show only on failure.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
