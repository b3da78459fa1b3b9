package processapi_test

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"strconv"
	"testing"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/execenv"
	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
	"github.com/envd-dev/envd/internal/proc"
	"github.com/envd-dev/envd/internal/proc/proctest"
	"github.com/envd-dev/envd/internal/processapi"
	"github.com/envd-dev/envd/internal/testkit"
)

func TestMain(m *testing.M) {
	testkit.RunHelper()
	os.Exit(m.Run())
}

// server is the Process service alone on an httptest server, with the Basic
// user middleware in front as in the daemon, and an injectable clock.
type server struct {
	url    string
	http   *http.Client
	client processconnect.ProcessClient // binary proto, as the host agent
	json   processconnect.ProcessClient // Connect JSON, as the SDKs
	env    *execenv.Env
	procs  *proc.Manager
	clock  *testkit.Clock
}

func newServer(t testing.TB, mutate ...func(*proc.Options)) *server {
	t.Helper()
	pf := proctest.New(t, mutate...)
	m, env, c := pf.Manager, pf.Env, pf.Clock
	mux := http.NewServeMux()
	mux.Handle(processapi.Wrap(processconnect.NewProcessHandler(processapi.New(m, env, slog.New(slog.DiscardHandler)), processapi.HandlerOptions()...)))
	hs := httptest.NewServer(auth.BasicUser(env, mux))
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}}
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
	})
	return &server{
		url:    hs.URL,
		http:   hc,
		client: processconnect.NewProcessClient(hc, hs.URL),
		json:   processconnect.NewProcessClient(hc, hs.URL, connect.WithProtoJSON()),
		env:    env,
		procs:  m,
		clock:  c,
	}
}

func helper(name string, args ...string) *pb.ProcessConfig {
	cmd, a := testkit.Helper(name, args...)
	return &pb.ProcessConfig{Cmd: cmd, Args: a, Envs: testkit.HelperEnv()}
}

// events is what one Start/Connect stream delivered.
type events struct {
	pid        uint32
	stdout     []byte
	stderr     []byte
	pty        []byte
	keepalives int
	end        *pb.ProcessEvent_EndEvent
	order      []string // kinds in arrival order
}

func drain[T interface{ GetEvent() *pb.ProcessEvent }](t testing.TB, s interface {
	Receive() bool
	Msg() T
	Err() error
}) (*events, error) {
	t.Helper()
	ev := &events{}
	for s.Receive() {
		ev.add(s.Msg().GetEvent())
	}
	return ev, s.Err()
}

func (ev *events) add(e *pb.ProcessEvent) {
	switch x := e.GetEvent().(type) {
	case *pb.ProcessEvent_Start:
		ev.pid = x.Start.GetPid()
		ev.order = append(ev.order, "start")
	case *pb.ProcessEvent_Data:
		ev.stdout = append(ev.stdout, x.Data.GetStdout()...)
		ev.stderr = append(ev.stderr, x.Data.GetStderr()...)
		ev.pty = append(ev.pty, x.Data.GetPty()...)
		if len(ev.order) == 0 || ev.order[len(ev.order)-1] != "data" {
			ev.order = append(ev.order, "data")
		}
	case *pb.ProcessEvent_End:
		ev.end = x.End
		ev.order = append(ev.order, "end")
	case *pb.ProcessEvent_Keepalive:
		ev.keepalives++
	}
}

func run(t testing.TB, c processconnect.ProcessClient, req *pb.StartRequest) *events {
	t.Helper()
	ev, err := runErr(t, c, req)
	if err != nil {
		t.Fatalf("start %v: %v", req.GetProcess().GetCmd(), err)
	}
	return ev
}

func runErr(t testing.TB, c processconnect.ProcessClient, req *pb.StartRequest) (*events, error) {
	t.Helper()
	s, err := c.Start(t.Context(), req)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return drain[*pb.StartResponse](t, s)
}

func wantCode(t testing.TB, err error, code connect.Code, msg string) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != code || (msg != "" && ce.Message() != msg) {
		t.Fatalf("got error %v; want %v %q", err, code, msg)
	}
}

// as returns a client that authenticates as user, as the SDKs do.
func (s *server) as(user string) processconnect.ProcessClient {
	return s.with(header("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"))))
}

func (s *server) with(i connect.Interceptor) processconnect.ProcessClient {
	return processconnect.NewProcessClient(s.http, s.url, connect.WithInterceptors(i))
}

type headerInterceptor struct{ k, v string }

func header(k, v string) connect.Interceptor { return headerInterceptor{k, v} }

func (h headerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, r connect.AnyRequest) (connect.AnyResponse, error) {
		r.Header().Set(h.k, h.v)
		return next(ctx, r)
	}
}

func (h headerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, s connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, s)
		conn.RequestHeader().Set(h.k, h.v)
		return conn
	}
}

func (h headerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// healthy checks the service still answers after a bad request.
func (s *server) healthy(t testing.TB) {
	t.Helper()
	if _, err := s.client.List(t.Context(), &pb.ListRequest{}); err != nil {
		t.Fatalf("service unhealthy: %v", err)
	}
	ev := run(t, s.client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "echo", Args: []string{"alive"}}})
	if string(ev.stdout) != "alive\n" {
		t.Fatalf("service unhealthy: %q", ev.stdout)
	}
}

func currentUser(t testing.TB) *execenv.User {
	t.Helper()
	u, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		t.Fatal(err)
	}
	eu, err := execenv.LookupUser(u.Username)
	if err != nil {
		t.Fatal(err)
	}
	return eu
}
