package envdapi_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/envdtest"
	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
	"github.com/envd-dev/envd/internal/gen/envd/v1/envdv1connect"
	ppb "github.com/envd-dev/envd/internal/gen/process"
)

type headers map[string]string

func (h headers) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, r connect.AnyRequest) (connect.AnyResponse, error) {
		for k, v := range h {
			r.Header().Set(k, v)
		}
		return next(ctx, r)
	}
}

func (h headers) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, s connect.Spec) connect.StreamingClientConn {
		c := next(ctx, s)
		for k, v := range h {
			c.RequestHeader().Set(k, v)
		}
		return c
	}
}

func (h headers) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// The daemon serves the envd.v1 services on its one port behind the same
// access token and Basic-auth user rules as the process service.
func TestDaemonServesEnvdV1WithAuth(t *testing.T) {
	s := envdtest.Start(t)
	resp, err := s.Client.Post(s.URL+"/init", "application/json", strings.NewReader(`{"accessToken":"tok"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		t.Fatalf("/init: %s", resp.Status)
	}
	client := func(h headers) (envdv1connect.ExitsClient, envdv1connect.PortsClient, envdv1connect.OutputClient) {
		o := connect.WithInterceptors(h)
		return envdv1connect.NewExitsClient(s.Client, s.URL, o), envdv1connect.NewPortsClient(s.Client, s.URL, o), envdv1connect.NewOutputClient(s.Client, s.URL, o)
	}
	exits, ports, output := client(headers{})
	_, err = exits.List(t.Context(), &pb.ListExitsRequest{})
	wantCode(t, err, connect.CodeUnauthenticated, "")
	_, err = ports.WaitFor(t.Context(), &pb.WaitForRequest{Port: 1})
	wantCode(t, err, connect.CodeUnauthenticated, "")
	_, err = readAll(t, output, &pb.ReadRequest{Process: pidRef(1), Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT})
	wantCode(t, err, connect.CodeUnauthenticated, "")

	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("no-such-user-envd:"))
	exits, _, _ = client(headers{"X-Access-Token": "tok", "Authorization": basic})
	_, err = exits.List(t.Context(), &pb.ListExitsRequest{})
	wantCode(t, err, connect.CodeUnauthenticated, "invalid username: 'no-such-user-envd'")

	exits, _, output = client(headers{"X-Access-Token": "tok"})
	if _, err := exits.List(t.Context(), &pb.ListExitsRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err = readAll(t, output, &pb.ReadRequest{Process: pidRef(999999), Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT})
	wantCode(t, err, connect.CodeNotFound, "process with pid 999999 not found")
}

// Streams follow the Keepalive-Ping-Interval rule of the process streams.
func TestStreamsKeepalive(t *testing.T) {
	s := newServer(t, options{})
	h := headers{"Keepalive-Ping-Interval": "1"}
	out := envdv1connect.NewOutputClient(s.http, s.url, connect.WithInterceptors(h))
	ports := envdv1connect.NewPortsClient(s.http, s.url, connect.WithInterceptors(h))
	pid := s.start(t, &ppb.StartRequest{Process: helper("hang")})
	st, err := out.Read(t.Context(), &pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for n := 0; n < 2; {
		if !st.Receive() {
			t.Fatalf("read ended: %v", st.Err())
		}
		if st.Msg().GetKeepalive() == nil {
			t.Fatalf("unexpected %v", st.Msg())
		}
		n++
	}
	ws, err := ports.Watch(t.Context(), &pb.WatchPortsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for n := 0; n < 1; {
		if !ws.Receive() {
			t.Fatalf("watch ended: %v", ws.Err())
		}
		if ws.Msg().GetKeepalive() {
			n++
		}
	}
}
