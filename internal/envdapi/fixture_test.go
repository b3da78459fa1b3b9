package envdapi_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/cgroup"
	"github.com/envd-dev/envd/internal/envdapi"
	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
	"github.com/envd-dev/envd/internal/gen/envd/v1/envdv1connect"
	ppb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
	"github.com/envd-dev/envd/internal/portscan"
	"github.com/envd-dev/envd/internal/portwatch"
	"github.com/envd-dev/envd/internal/proc"
	"github.com/envd-dev/envd/internal/proc/proctest"
	"github.com/envd-dev/envd/internal/processapi"
	"github.com/envd-dev/envd/internal/testkit"
)

// ownHelper marks this package's helper modes (beside envdtest's).
const ownHelper = "envdapi-test-helper"

func TestMain(m *testing.M) {
	testkit.RunHelper()
	if len(os.Args) > 2 && os.Args[1] == ownHelper {
		os.Exit(runOwnHelper(os.Args[2], os.Args[3:]))
	}
	os.Exit(m.Run())
}

// runOwnHelper: alloc N (touch N bytes, print "ok", exit), spin MS (burn
// MS of user CPU, print the user time in µs that getrusage saw), listen
// PORT (listen on 127.0.0.1:PORT until killed).
func runOwnHelper(name string, args []string) int {
	switch name {
	case "alloc":
		n, _ := strconv.Atoi(args[0])
		b := make([]byte, n)
		for i := 0; i < n; i += 4096 {
			b[i] = 1
		}
		fmt.Println("ok", b[n/2])
		runtime.KeepAlive(b)
	case "spin":
		ms, _ := strconv.Atoi(args[0])
		var ru syscall.Rusage
		x := 0
		for {
			for i := range 1_000_000 {
				x += i
			}
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
			if time.Duration(ru.Utime.Nano()) >= time.Duration(ms)*time.Millisecond {
				break
			}
		}
		fmt.Println(ru.Utime.Nano()/1000, x%2)
	case "listen":
		ln, err := net.Listen("tcp", "127.0.0.1:"+args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("listening")
		for {
			c, err := ln.Accept()
			if err != nil {
				return 1
			}
			c.Close()
		}
	default:
		return 2
	}
	return 0
}

func ownCmd(name string, args ...string) *ppb.ProcessConfig {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return &ppb.ProcessConfig{Cmd: exe, Args: append([]string{ownHelper, name}, args...), Envs: testkit.HelperEnv()}
}

func helper(name string, args ...string) *ppb.ProcessConfig {
	cmd, a := testkit.Helper(name, args...)
	return &ppb.ProcessConfig{Cmd: cmd, Args: a, Envs: testkit.HelperEnv()}
}

// server is the process service and the envd.v1 services on one httptest
// server, with the Basic user middleware in front as in the daemon.
type server struct {
	url     string
	http    *http.Client
	process processconnect.ProcessClient
	output  envdv1connect.OutputClient
	exits   envdv1connect.ExitsClient
	ports   envdv1connect.PortsClient
	json    jsonClients
	procs   *proc.Manager
	watcher *portwatch.Watcher
	clock   *testkit.Clock
}

type jsonClients struct {
	output envdv1connect.OutputClient
	exits  envdv1connect.ExitsClient
	ports  envdv1connect.PortsClient
}

type options struct {
	proc    func(*proc.Options)
	cgroups *cgroup.Manager
}

func newServer(t testing.TB, o options) *server {
	t.Helper()
	pf := proctest.New(t, func(po *proc.Options) {
		if o.cgroups != nil {
			po.Placer = o.cgroups
		}
		if o.proc != nil {
			o.proc(po)
		}
	})
	m, env, c := pf.Manager, pf.Env, pf.Clock
	w := &portwatch.Watcher{Scan: portwatch.SockDiagOr(portscan.Scanner{ProcRoot: "/proc"}.All), ProcRoot: "/proc", Interval: 20 * time.Millisecond}
	mux := http.NewServeMux()
	mux.Handle(processconnect.NewProcessHandler(processapi.New(m, env, slog.New(slog.DiscardHandler)), processapi.HandlerOptions()...))
	mux.Handle(envdv1connect.NewOutputHandler(envdapi.NewOutput(m), envdapi.HandlerOptions()...))
	mux.Handle(envdv1connect.NewExitsHandler(envdapi.NewExits(m), envdapi.HandlerOptions()...))
	mux.Handle(envdv1connect.NewPortsHandler(envdapi.NewPorts(w), envdapi.HandlerOptions()...))
	hs := httptest.NewServer(auth.BasicUser(env, mux))
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
	})
	j := connect.WithProtoJSON()
	return &server{
		url:     hs.URL,
		http:    hc,
		process: processconnect.NewProcessClient(hc, hs.URL),
		output:  envdv1connect.NewOutputClient(hc, hs.URL),
		exits:   envdv1connect.NewExitsClient(hc, hs.URL),
		ports:   envdv1connect.NewPortsClient(hc, hs.URL),
		json: jsonClients{
			output: envdv1connect.NewOutputClient(hc, hs.URL, j),
			exits:  envdv1connect.NewExitsClient(hc, hs.URL, j),
			ports:  envdv1connect.NewPortsClient(hc, hs.URL, j),
		},
		procs:   m,
		watcher: w,
		clock:   c,
	}
}

// start runs a process and detaches at once: only the start event is read,
// so everything it prints goes unread by any client.
func (s *server) start(t testing.TB, req *ppb.StartRequest) uint32 {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st, err := s.process.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !st.Receive() {
		t.Fatalf("start %v: %v", req.GetProcess().GetCmd(), st.Err())
	}
	return st.Msg().GetEvent().GetStart().GetPid()
}

// testCgroups opens a cgroup.Manager on a fresh directory of the host's
// cgroup2 mount, removed at the end; it skips where none is writable.
func testCgroups(t testing.TB) (*cgroup.Manager, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating cgroups needs root")
	}
	mount := "/sys/fs/cgroup/unified"
	if cgroup.IsCgroup2(mount) != nil {
		mount = "/sys/fs/cgroup"
	}
	if err := cgroup.IsCgroup2(mount); err != nil {
		t.Skipf("no cgroup2 mount: %v", err)
	}
	root := filepath.Join(mount, fmt.Sprintf("envdapi-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Skipf("cgroup2 at %s is not writable: %v", mount, err)
	}
	m := cgroup.Open(root, nil, slog.New(slog.DiscardHandler))
	t.Cleanup(func() {
		m.Close()
		for _, g := range cgroup.Groups() {
			dir := filepath.Join(root, string(g))
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if e.IsDir() {
					os.Remove(filepath.Join(dir, e.Name()))
				}
			}
			os.Remove(dir)
		}
		if err := os.Remove(root); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	if !m.Enabled() {
		t.Fatalf("cgroup manager disabled on %s", root)
	}
	return m, root
}

func pidRef(pid uint32) *pb.ProcessRef { return &pb.ProcessRef{Selector: &pb.ProcessRef_Pid{Pid: pid}} }

func wantCode(t testing.TB, err error, code connect.Code, msg string) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != code || (msg != "" && ce.Message() != msg) {
		t.Fatalf("got error %v; want %v %q", err, code, msg)
	}
}

func itoa(n uint32) string { return strconv.Itoa(int(n)) }

// healthy checks the services still answer after bad requests.
func healthy(t testing.TB, s *server) {
	t.Helper()
	if _, err := s.exits.List(t.Context(), &pb.ListExitsRequest{}); err != nil {
		t.Fatalf("unhealthy: %v", err)
	}
	pid := s.start(t, &ppb.StartRequest{Process: &ppb.ProcessConfig{Cmd: "echo", Args: []string{"alive"}}})
	rep, err := s.exits.Wait(t.Context(), &pb.WaitRequest{Process: pidRef(pid)})
	if err != nil || rep.GetStdoutBytes() != 6 {
		t.Fatalf("unhealthy: %v %v", rep, err)
	}
}
