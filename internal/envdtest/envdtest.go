// Package envdtest runs a real envd daemon inside a test process, on a
// loopback port, so tests drive it over the wire with real clients. What
// tests need without a daemon (helper commands, clock, FUSE, users, …) is
// in testkit, which packages below the daemon use instead.
package envdtest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/envd-dev/envd/client"
	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/daemon"
)

// Server is a running daemon. It stops when the test ends, or at Stop.
type Server struct {
	URL    string
	Daemon *daemon.Daemon
	Client *http.Client // HTTP/1.1, as the SDKs and the host agent use

	stopOnce sync.Once
	stop     func() error
	stopErr  error
}

// NewClient returns a client package Client for the daemon over s.Client,
// for tests whose calls are ordinary ones; tests about the wire format itself
// build their requests by hand.
func (s *Server) NewClient(t testing.TB, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(s.URL, append([]client.Option{client.WithHTTPClient(s.Client)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Stop shuts the daemon down as SIGTERM would and returns what Serve
// returned. Later calls return the same result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

// Start runs a daemon configured as with --isnotfc --no-cgroups on
// 127.0.0.1:0; mutate adjusts the config before it starts. Its warnings and
// errors go to the test log.
func Start(t testing.TB, mutate ...func(*config.Config)) *Server {
	t.Helper()
	return StartLogged(t, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})), mutate...)
}

// StartLogged is Start with the daemon logging to log, for tests that read
// what it logs.
func StartLogged(t testing.TB, log *slog.Logger, mutate ...func(*config.Config)) *Server {
	t.Helper()
	cfg, err := config.Parse([]string{"-isnotfc", "-no-cgroups"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ListenHost = "127.0.0.1"
	for _, m := range mutate {
		m(&cfg)
	}
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
	s := &Server{
		URL:    "http://" + ln.Addr().String(),
		Daemon: d,
		Client: &http.Client{Transport: tr},
		stop: func() error {
			tr.CloseIdleConnections()
			cancel()
			select {
			case err := <-done:
				return err
			case <-time.After(10 * time.Second):
				return errors.New("daemon did not shut down within 10s")
			}
		},
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// testWriter sends daemon logs to the test log, so they show only on failure.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
