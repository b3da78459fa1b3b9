// Command envd-bench measures envd over the wire and, in the same run, this
// machine's own limit for each scenario, and prints the ratio next to the
// target from issue 6. Everything it moves is checked against the expected
// content, so a broken path cannot look fast.
//
//	go run ./cmd/envd-bench             # start bin/envd on loopback, full sizes
//	go run ./cmd/envd-bench -short      # tiny sizes, seconds (CI: checks it works, not timings)
//	go run ./cmd/envd-bench -scale      # also measure how cost grows with size
//	go run ./cmd/envd-bench -url http://127.0.0.1:49983 -pid 1234   # any running envd
//	go run ./cmd/envd-bench -vm        # boot figures: envd as PID 1 of a qemu VM beside a trivial server (vm.go)
//
// The target must run on this machine: fixtures are created and limits are
// measured on the local filesystem the daemon serves.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
)

type options struct {
	url     string
	token   string
	user    string
	bin     string
	pid     int
	dir     string
	short   bool
	scale   bool
	only    *regexp.Regexp
	rpcGzip bool
	timeout time.Duration
	profile string
	// Overrides of the chosen sizes (0: keep): fewer samples or a smaller
	// stream where a full run would not fit, e.g. a VM guest under TCG.
	iters, reps, stdoutMiB int
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	var opt options
	var only string
	fs := flag.NewFlagSet("envd-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opt.url, "url", "", "benchmark the envd at this base URL (must run on this machine) instead of starting bin/envd")
	fs.StringVar(&opt.token, "token", "", "X-Access-Token to send")
	fs.StringVar(&opt.user, "user", "", "user for RPCs (Basic auth) and /files (username=); default: the daemon's default user")
	fs.StringVar(&opt.bin, "bin", "bin/envd", "envd binary to start when -url is not given (built with ./scripts/build if missing)")
	fs.IntVar(&opt.pid, "pid", 0, "with -url: the daemon's pid, for CPU and memory figures")
	fs.StringVar(&opt.dir, "dir", "", "work directory for fixtures (default: a new directory under $TMPDIR)")
	fs.BoolVar(&opt.short, "short", false, "tiny sizes and iterations: checks every scenario works, timings meaningless")
	fs.BoolVar(&opt.scale, "scale", false, "also measure cost growth (10k processes, 1k streams, 100k entries, 4 GiB upload)")
	fs.StringVar(&only, "only", "", "run only scenarios whose name matches this regexp")
	fs.BoolVar(&opt.rpcGzip, "rpc-gzip", true, "let the RPC client accept gzip responses (connect-go's default, as the Wrenn host agent)")
	fs.DurationVar(&opt.timeout, "timeout", 0, "limit per scenario (default 3m, 60s with -short)")
	fs.StringVar(&opt.profile, "profile", "", "run the daemon in-process from this source tree under pprof instead of bin/envd; write cpu.pprof and allocs.pprof into this directory")
	fs.IntVar(&opt.iters, "iters", 0, "latency samples per scenario (default 200, 5 with -short)")
	fs.IntVar(&opt.reps, "reps", 0, "throughput repetitions per scenario (default 5, 1 with -short)")
	fs.IntVar(&opt.stdoutMiB, "stdout-mib", 0, "MiB the stdout scenario streams (default 512, 1 with -short)")
	servePort := fs.Int("serve-profiled", 0, "internal: be the profiled daemon on this port (used by -profile)")
	vmOpt := vmFlags(fs) // vm.go
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *servePort != 0 {
		return serveProfiled(*servePort, opt.profile, stderr)
	}
	if vmOpt.enabled {
		return vmOpt.run(stdout, stderr)
	}
	if only != "" {
		re, err := regexp.Compile(only)
		if err != nil {
			fmt.Fprintln(stderr, "envd-bench: -only:", err)
			return 2
		}
		opt.only = re
	}
	if opt.timeout == 0 {
		opt.timeout = 3 * time.Minute
		if opt.short {
			opt.timeout = 60 * time.Second
		}
	}
	b, err := setup(context.Background(), opt, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "envd-bench:", err)
		return 1
	}
	// The daemon and the reference server sit in their own process groups:
	// on Ctrl-C or SIGTERM stop them here rather than leave them running.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigc
		fmt.Fprintf(stderr, "envd-bench: %v: stopping the daemon\n", sig)
		_ = b.close()
		os.Exit(130)
	}()
	failed := b.runAll(stdout)
	signal.Stop(sigc)
	if err := b.close(); err != nil {
		fmt.Fprintln(stderr, "envd-bench: shutdown:", err)
		failed = true
	}
	if failed {
		return 1
	}
	return 0
}

// sizes are the scenario sizes; -short shrinks every one.
type sizes struct {
	iters      int   // latency samples
	reps       int   // throughput repetitions
	concurrent int   // the "50 concurrent sleep 0.1"
	stdout     int64 // head -c N /dev/zero
	pty        int64
	streamIn   int64
	sendIn     int64
	checkIn    int64 // stdin bytes piped through sha256sum to check content
	upload     int64
	gzip       int64
	listDir    int
	watch      int
	spawns     int
	slowRead   int64
	slowRate   float64 // bytes/s of the slow reader
	drops      int
}

func fullSizes() sizes {
	return sizes{iters: 200, reps: 5, concurrent: 50, stdout: 512 << 20, pty: 128 << 20, streamIn: 256 << 20,
		sendIn: 64 << 20, checkIn: 8 << 20, upload: 256 << 20, gzip: 128 << 20, listDir: 10000, watch: 200,
		spawns: 5, slowRead: 100e6, slowRate: 25e6, drops: 10}
}

func shortSizes() sizes {
	return sizes{iters: 5, reps: 1, concurrent: 5, stdout: 1 << 20, pty: 256 << 10, streamIn: 1 << 20,
		sendIn: 256 << 10, checkIn: 256 << 10, upload: 1 << 20, gzip: 1 << 20, listDir: 100, watch: 5,
		spawns: 1, slowRead: 2e6, slowRate: 20e6, drops: 2}
}

type bench struct {
	opt  options
	log  io.Writer
	sz   sizes
	base string
	hc   *http.Client
	proc processconnect.ProcessClient
	// procPlain does not advertise gzip, as clients other than connect-go's
	// may not: the stdout figure is taken both ways.
	procPlain processconnect.ProcessClient
	fs        filesystemconnect.FilesystemClient
	pid       int // daemon pid, 0 if unknown
	daemon    *server
	bin       string // envd binary, "" if unknown
	dir       string // fixtures, on this machine
	ownDir    bool
	tmp       string // our own scratch (logs, trivial server)
	trivBin   string
	triv      *server
	data      []byte // pseudo-random payload, the size of the largest upload/stdin
}

func setup(ctx context.Context, opt options, log io.Writer) (*bench, error) {
	b := &bench{opt: opt, log: log, sz: fullSizes()}
	if opt.short {
		b.sz = shortSizes()
	}
	if opt.iters > 0 {
		b.sz.iters = opt.iters
	}
	if opt.reps > 0 {
		b.sz.reps = opt.reps
	}
	if opt.stdoutMiB > 0 {
		b.sz.stdout = int64(opt.stdoutMiB) << 20
	}
	var err error
	if b.tmp, err = os.MkdirTemp("", "envd-bench-"); err != nil {
		return nil, err
	}
	b.dir = opt.dir
	if b.dir == "" {
		b.dir, b.ownDir = filepath.Join(b.tmp, "work"), true
	}
	// The daemon may run as root and serve another user: keep the tree open.
	if err := os.MkdirAll(b.dir, 0o777); err != nil {
		return nil, err
	}
	_ = os.Chmod(b.tmp, 0o755)
	_ = os.Chmod(b.dir, 0o777)

	if opt.url == "" {
		if opt.scale {
			// 10,000 live processes hold ~30,000 pipe ends in the daemon,
			// more than the usual hard limit; the daemon inherits ours.
			raiseNoFile(log)
		}
		if b.bin, err = ensureEnvd(ctx, opt.bin, log); err != nil {
			return nil, err
		}
		if opt.profile != "" {
			b.daemon, err = b.spawnProfiled(ctx)
		} else {
			b.logf("starting %s", b.bin)
			b.daemon, err = spawn(ctx, b.bin, envdArgs, b.tmp)
		}
		if err != nil {
			return nil, err
		}
		b.base, b.pid = b.daemon.url, b.daemon.pid()
	} else {
		b.base, b.pid = strings.TrimRight(opt.url, "/"), opt.pid
	}

	tr := &http.Transport{
		Protocols:           new(http.Protocols),
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true, // gzip is negotiated explicitly where it is measured
	}
	// HTTP/1.1 only, as both the SDKs and the Wrenn host agent reach envd.
	tr.Protocols.SetHTTP1(true)
	b.hc = &http.Client{Transport: &authTransport{next: tr, token: opt.token, user: opt.user}}
	b.connect()

	n := max(b.sz.upload, b.sz.streamIn, b.sz.sendIn, b.sz.checkIn)
	b.data = make([]byte, n)
	r := rand.NewChaCha8([32]byte{'e', 'n', 'v', 'd'})
	_, _ = r.Read(b.data)
	b.logf("target %s (pid %d), fixtures in %s", b.base, b.pid, b.dir)
	return b, nil
}

// connect makes the RPC clients for b.base: the Connect protocol with binary
// proto over HTTP/1.1, connect-go's defaults, as the Wrenn host agent uses.
func (b *bench) connect() {
	var copts []connect.ClientOption
	if !b.opt.rpcGzip {
		copts = append(copts, connect.WithAcceptCompression("gzip", nil, nil))
	}
	b.proc = processconnect.NewProcessClient(b.hc, b.base, copts...)
	b.fs = filesystemconnect.NewFilesystemClient(b.hc, b.base, copts...)
	b.procPlain = processconnect.NewProcessClient(b.hc, b.base, connect.WithAcceptCompression("gzip", nil, nil))
}

// freshDaemon restarts the daemon this command started, so a memory figure
// is not inflated by heap an earlier scenario left to the Go runtime. With
// -url or -profile the daemon is left alone and the figure says so.
func (b *bench) freshDaemon(ctx context.Context) (note string, err error) {
	if b.daemon == nil || b.opt.profile != "" {
		return "daemon not restarted (-url or -profile): includes memory kept from earlier scenarios", nil
	}
	old := b.daemon
	b.daemon = nil
	b.hc.CloseIdleConnections()
	if err := old.stop(); err != nil {
		return "", fmt.Errorf("stop envd: %w", err)
	}
	if old.stopped > time.Second {
		b.logf("envd took %s to stop after SIGTERM", old.stopped.Round(time.Millisecond))
	}
	s, err := spawn(ctx, b.bin, envdArgs, b.tmp)
	if err != nil {
		return "", fmt.Errorf("restart envd: %w", err)
	}
	b.daemon, b.base, b.pid = s, s.url, s.pid()
	b.connect()
	return "", nil
}

// spawnProfiled starts this program as the daemon under pprof (-profile).
func (b *bench) spawnProfiled(ctx context.Context) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(b.opt.profile)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b.logf("starting the profiled daemon; profiles go to %s", dir)
	return spawn(ctx, self, func(p int) []string {
		return []string{"-serve-profiled", fmt.Sprint(p), "-profile", dir}
	}, b.tmp)
}

func raiseNoFile(log io.Writer) {
	lim := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(log, "envd-bench: cannot raise RLIMIT_NOFILE for the daemon:", err)
	}
}

func envdArgs(port int) []string {
	return []string{"--isnotfc", "--no-cgroups", "--port", fmt.Sprint(port)}
}

// ensureEnvd returns the envd binary to start, building it when missing.
func ensureEnvd(ctx context.Context, bin string, log io.Writer) (string, error) {
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err == nil {
		return abs, nil
	}
	if _, err := os.Stat("scripts/build"); err != nil {
		return "", fmt.Errorf("%s is missing and there is no ./scripts/build here to build it", bin)
	}
	fmt.Fprintln(log, "envd-bench: building envd with ./scripts/build")
	cmd := exec.CommandContext(ctx, "./scripts/build")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("./scripts/build: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("./scripts/build did not produce %s", bin)
	}
	return abs, nil
}

func (b *bench) close() error {
	var errs []error
	if b.daemon != nil {
		b.hc.CloseIdleConnections()
		if err := b.daemon.stop(); err != nil {
			errs = append(errs, fmt.Errorf("envd: %w (log %s)", err, b.daemon.log))
		} else if b.daemon.stopped > time.Second {
			b.logf("envd took %s to stop after SIGTERM", b.daemon.stopped.Round(time.Millisecond))
		}
	}
	if b.triv != nil {
		if err := b.triv.stop(); err != nil {
			errs = append(errs, fmt.Errorf("trivial server: %w", err))
		}
	}
	if len(errs) == 0 {
		if !b.ownDir {
			_ = os.RemoveAll(filepath.Join(b.dir, "envd-bench"))
		}
		_ = os.RemoveAll(b.tmp)
	}
	return errors.Join(errs...)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "envd-bench: "+format+"\n", args...)
}

// describeTarget names what was measured: the binary and its build commit,
// flagged when it is older than the checkout, or the URL.
func (b *bench) describeTarget() string {
	switch {
	case b.opt.profile != "":
		return "daemon from this source tree in-process under pprof"
	case b.bin == "":
		return "envd at " + b.base
	}
	out, err := exec.Command(b.bin, "--commit").Output()
	commit := strings.TrimSpace(string(out))
	if err != nil {
		return b.bin
	}
	desc := fmt.Sprintf("%s (commit %s)", b.bin, commit)
	head, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if h := strings.TrimSpace(string(head)); err == nil && h != "" && !strings.HasPrefix(h, commit) && !strings.HasPrefix(commit, h) {
		desc += fmt.Sprintf(" — NOT the checkout's HEAD %s, run ./scripts/build", h)
	}
	return desc
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// scenario is one group of rows measured together.
type scenario struct {
	name string
	run  func(ctx context.Context) []row
}

func (b *bench) scenarios() []scenario {
	return []scenario{
		{"start", b.startTrue},
		{"concurrent", b.concurrentSleep},
		{"stdout", b.stdoutStream},
		{"pty", b.ptyStream},
		{"stdin", b.stdinStream},
		{"signal", b.signalEnd},
		{"procconnect", b.connectFirst},
		{"upload", b.withTrivial("upload", b.upload)},
		{"download", b.withTrivial("download", b.download)},
		{"gzip", b.gzipDownload},
		{"stat", b.withTrivial("stat", b.statLatency)},
		{"listdir", b.listDir},
		{"mkdir", b.makeDirRemove},
		{"watch", b.watchLatency},
		{"footprint", b.withTrivial("footprint", b.footprint)},
		{"slowreader", b.slowReader},
		{"drop", b.dropStreams},
		{"init", b.withTrivial("init", b.initRepeat)},
		{"unary", b.withTrivial("unary", b.unaryLatency)},
		{"durable", b.withTrivial("durable", b.durableUpload)},
		{"threads", b.withTrivial("threads", b.idleThreads)},
	}
}

// withTrivial starts the trivial reference server before a scenario that
// compares envd with it. It is built here, not in setup, because building
// needs a Go toolchain, which a target such as a VM guest may lack while its
// other scenarios (Start, stdout) only compare with the kernel.
func (b *bench) withTrivial(name string, run func(context.Context) []row) func(context.Context) []row {
	return func(ctx context.Context) []row {
		if b.triv == nil {
			b.logf("building the trivial reference server")
			bin, err := buildTrivial(ctx, b.tmp)
			if err != nil {
				return []row{errRow(name, target{}, err)}
			}
			s, err := spawn(ctx, bin, func(p int) []string { return []string{fmt.Sprint(p)} }, b.tmp)
			if err != nil {
				return []row{errRow(name, target{}, err)}
			}
			b.trivBin, b.triv = bin, s
		}
		return run(ctx)
	}
}

// runAll prints the table and reports whether any row is an error.
func (b *bench) runAll(w io.Writer) bool {
	start := time.Now()
	var rows []row
	for _, s := range b.scenarios() {
		if b.opt.only != nil && !b.opt.only.MatchString(s.name) {
			continue
		}
		rows = append(rows, b.runOne(s)...)
	}
	mode := "full"
	if b.opt.short {
		mode = "short (timings meaningless)"
	}
	fmt.Fprintf(w, "envd-bench: %s mode, %s, %d CPUs, load %s, %s\n\n", mode, b.describeTarget(), runtime.NumCPU(),
		loadAvg(), time.Now().UTC().Format(time.RFC3339))
	printTable(w, rows)
	failed := false
	for _, r := range rows {
		failed = failed || r.err != nil
	}
	if b.opt.scale || b.opt.short {
		var srows []scaleRow
		for _, s := range b.scaleScenarios() {
			if b.opt.only != nil && !b.opt.only.MatchString(s.name) {
				continue
			}
			srows = append(srows, b.runScale(s)...)
		}
		if len(srows) > 0 {
			fmt.Fprintln(w)
			printScale(w, srows)
		}
		for _, r := range srows {
			failed = failed || r.err != nil
		}
	}
	fmt.Fprintf(w, "\ntook %s\n", time.Since(start).Round(time.Second))
	return failed
}

func (b *bench) runOne(s scenario) (rows []row) {
	b.logf("scenario %s", s.name)
	ctx, cancel := budget(b.opt.timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			rows = append(rows, errRow(s.name, target{}, fmt.Errorf("panic: %v", p)))
		}
	}()
	rows = s.run(ctx)
	for i := range rows {
		if rows[i].err != nil {
			rows[i].met = "ERROR"
			rows[i].ratio = math.NaN()
		}
	}
	return rows
}

// budget is a context cancelled after d that carries no deadline: connect-go
// would send a deadline as Connect-Timeout-Ms, which envd takes as the
// lifetime of every process started under it (§8.1), and the Wrenn host agent
// starts processes without one.
func budget(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	t := time.AfterFunc(d, cancel)
	return ctx, func() { t.Stop(); cancel() }
}

// authTransport adds the access token to every request and the user as Basic
// auth to RPCs, as the SDKs do.
type authTransport struct {
	next  http.RoundTripper
	token string
	user  string
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rpc := strings.HasPrefix(req.URL.Path, "/process.") || strings.HasPrefix(req.URL.Path, "/filesystem.")
	if t.token == "" && (t.user == "" || !rpc) {
		return t.next.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	if t.token != "" {
		req.Header.Set("X-Access-Token", t.token)
	}
	if t.user != "" && rpc {
		req.SetBasicAuth(t.user, "")
	}
	return t.next.RoundTrip(req)
}
