package client

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/daemon"
	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
)

// protoRecorder notes the HTTP version of every response.
type protoRecorder struct {
	next  http.RoundTripper
	mu    sync.Mutex
	proto map[string]bool
}

func (p *protoRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := p.next.RoundTrip(r)
	if err == nil {
		p.mu.Lock()
		p.proto[res.Proto] = true
		p.mu.Unlock()
	}
	return res, err
}

// startDaemon runs a daemon for this package's own tests, which cannot use
// envdtest: it imports this package.
func startDaemon(t *testing.T) string {
	t.Helper()
	cfg, err := config.Parse([]string{"-isnotfc", "-no-cgroups"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ListenHost = "127.0.0.1"
	d, err := daemon.New(cfg, daemon.Build{Version: "0.7.0", Commit: "test"}, slog.New(slog.DiscardHandler))
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + ln.Addr().String()
}

// The default client speaks HTTP/1.1, or h2c WithH2C, with either codec.
func TestDefaultTransports(t *testing.T) {
	url := startDaemon(t)
	for _, tc := range []struct {
		name  string
		opts  []Option
		proto string
	}{
		{"http1-proto", nil, "HTTP/1.1"},
		{"h2c-proto", []Option{WithH2C()}, "HTTP/2.0"},
		{"h2c-json", []Option{WithH2C(), WithJSON()}, "HTTP/2.0"},
		{"http1-json", []Option{WithJSON()}, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(url, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			rec := &protoRecorder{next: c.hc.Transport, proto: map[string]bool{}}
			c.hc.Transport = rec
			defer c.hc.CloseIdleConnections()
			ctx := context.Background()
			res, err := c.Run(ctx, Cmd{Cmd: "echo", Args: []string{"hi"}})
			if err != nil || string(res.Stdout) != "hi\n" {
				t.Fatalf("Run: %+v, %v", res, err)
			}
			if _, err := c.Stat(ctx, "/no/such"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Stat: %v", err)
			}
			if _, err := c.Upload(ctx, t.TempDir()+"/f", strings.NewReader("x")); err != nil {
				t.Fatal(err)
			}
			if len(rec.proto) != 1 || !rec.proto[tc.proto] {
				t.Fatalf("responses came over %v, want only %s", rec.proto, tc.proto)
			}
		})
	}
}

// silentStart sends the start event and then nothing, as a peer behind a
// proxy that died without resetting the connection.
type silentStart struct {
	processconnect.UnimplementedProcessHandler
	interval chan string
}

func (h silentStart) Start(ctx context.Context, _ *pb.StartRequest, st *connect.ServerStream[pb.StartResponse]) error {
	h.interval <- ""
	if err := st.Send(&pb.StartResponse{Event: &pb.ProcessEvent{Event: &pb.ProcessEvent_Start{Start: &pb.ProcessEvent_StartEvent{Pid: 42}}}}); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestKeepaliveWatchdog(t *testing.T) {
	h := silentStart{interval: make(chan string, 1)}
	mux := http.NewServeMux()
	path, handler := processconnect.NewProcessHandler(h)
	var got string
	mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Keepalive-Ping-Interval")
		handler.ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c, err := New(srv.URL, WithKeepalive(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Start(context.Background(), Cmd{Cmd: "x"})
	if err != nil {
		t.Fatal(err)
	}
	<-h.interval
	if p.PID != 42 || got != "1" {
		t.Fatalf("pid %d, Keepalive-Ping-Interval %q", p.PID, got)
	}
	_, err = p.Recv()
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no message or keepalive") {
		t.Fatalf("silent stream: %v, want the watchdog's ErrUnavailable", err)
	}
}

func TestSignalFromStatus(t *testing.T) {
	for status, want := range map[string]int{
		"signal: killed": 9, "signal: terminated": 15, "signal: interrupt": 2,
		"signal: segmentation fault (core dumped)": 11, "signal 9": 9, "exit status 1": 0, "": 0,
	} {
		if got := signalFromStatus(status); got != want {
			t.Errorf("%q: %d, want %d", status, got, want)
		}
	}
}
