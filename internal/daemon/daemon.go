// Package daemon is envd's composition root: it builds every component from a
// config.Config, serves them on one listener and shuts them down in order.
// Only main, envd-bench and tests (mostly through envdtest) import daemon;
// routes.go is the only place that registers routes.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/boot"
	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/fsapi"
	"github.com/envd-dev/envd/internal/fsops"
	"github.com/envd-dev/envd/internal/httpapi"
	"github.com/envd-dev/envd/internal/portscan"
	"github.com/envd-dev/envd/internal/portwatch"
	"github.com/envd-dev/envd/internal/proc"
	"github.com/envd-dev/envd/internal/reaper"
	"github.com/envd-dev/envd/internal/sysstat"
)

// Build identifies the binary; main stamps it at link time.
type Build struct {
	Version string
	Commit  string
}

// idleTimeout must exceed the idle timeout of the proxies in front of envd, or
// they reuse connections envd has already closed.
const idleTimeout = 640 * time.Second

// Daemon holds every long-lived component. Fields are set once in New.
type Daemon struct {
	cfg   config.Config
	build Build
	log   *slog.Logger
	env   *execenv.Env
	token *auth.Token

	// REST endpoints that hold state or hooks the VM side fills in.
	initAPI     *httpapi.Init
	snapshotAPI *httpapi.SnapshotPrepare
	metricsAPI  *httpapi.Metrics

	reaper *reaper.Reaper
	procs  *proc.Manager
	fs     *fsapi.Service
	writer *fsops.Writer      // uploads; fs's watchers recognise its temporary files
	ports  *portwatch.Watcher // scans only while a client watches
	// placer puts user processes into cgroups; nil leaves them in envd's.
	placer proc.Placer
	vm     vm // cgroups, MMDS, port forwarding, snapshot hooks (vm.go)
	// what the E2B orchestrator drives: freezes, collapse (orch.go), /init's
	// volumes and CA bundle (orchestrated.go)
	orch orch
	upg  upgradeParts // live upgrade (upgrade.go)
}

// New builds the components without starting anything.
func New(cfg config.Config, build Build, log *slog.Logger) (*Daemon, error) {
	d := &Daemon{
		cfg:   cfg,
		build: build,
		log:   log,
		env:   execenv.NewEnv(os.Getenv("PATH")),
		token: &auth.Token{},
	}
	d.env.SetInternal("WRENN_SANDBOX", strconv.FormatBool(!cfg.IsNotFC))
	d.env.SetInternal("E2B_SANDBOX", strconv.FormatBool(!cfg.IsNotFC))

	d.initAPI = httpapi.NewInit(d.env, d.token, build.Version, log)
	if !cfg.IsNotFC {
		d.initAPI.HostsPath = "/etc/hosts"
	}
	d.snapshotAPI = &httpapi.SnapshotPrepare{}
	d.metricsAPI = &httpapi.Metrics{Sampler: sysstat.NewSampler(cfg.ProcRoot, "/", time.Now), Log: log}

	d.setupVM()
	d.setupOrch()

	r, err := reaper.New(log, cfg.ReapOrphans)
	if err != nil {
		return nil, err
	}
	d.reaper = r
	d.setupOrchestrated()
	d.procs = proc.NewManager(proc.Options{Reaper: r, Env: d.env, Placer: d.placer, OnFork: d.vm.onFork, Log: log, LogLimit: cfg.OutputLogLimit, LogTotal: cfg.OutputLogTotal})
	d.ports = &portwatch.Watcher{Scan: portwatch.SockDiagOr(portscan.Scanner{ProcRoot: cfg.ProcRoot}.All), ProcRoot: cfg.ProcRoot, SelfPid: os.Getpid(), Forwarded: d.vm.forwarded, Log: log}
	d.writer = fsops.NewWriter(log)
	d.fs = fsapi.New(d.env, d.writer, log)
	d.setupUpgrade()
	return d, nil
}

// Serve answers on ln until ctx ends, then shuts down in order.
func (d *Daemon) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:     d.routes(),
		IdleTimeout: idleTimeout,
		// As long as the idle timeout: a deadline earlier than every timer
		// pending wakes the runtime's network poller, and a shorter one,
		// set after the first bytes of each request, did so on every
		// request (an eventfd write and a thread wakeup, about a tenth of
		// a /health round trip).
		ReadHeaderTimeout: idleTimeout,
		Protocols:         new(http.Protocols),
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	var fresh freshConns
	srv.ConnState = fresh.track
	// Runs once Shutdown has closed the listener.
	srv.RegisterOnShutdown(fresh.closeAll)
	d.startVM(ctx, srv)
	defer d.stopVM()

	// The reaper outlives the HTTP server: processes killed at shutdown
	// must still be reaped.
	reapCtx, stopReaper := context.WithCancel(context.WithoutCancel(ctx))
	reaped := make(chan struct{})
	go func() { d.reaper.Run(reapCtx); close(reaped) }()
	defer func() { stopReaper(); <-reaped }()
	if d.cfg.Cmd != "" && !d.cfg.ResumeHandover { // after an upgrade it runs already
		d.startCmd(d.cfg.Cmd)
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	d.log.Info("envd listening", "addr", ln.Addr().String(), "version", d.build.Version)

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Ordered shutdown. Streams end with ctx, their BaseContext, so Shutdown
	// both stops accepting and waits for them to finish.
	d.log.Info("shutdown: stop accepting, end streams")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	d.log.Info("shutdown: streams ended")
	d.fs.Close()
	d.killProcesses(shutdownCtx)
	d.log.Info("shutdown: process groups signalled")
	d.syncFilesystems()
	return err
}

// Run listens on the configured port and serves until ctx ends.
func Run(ctx context.Context, cfg config.Config, build Build, log *slog.Logger) error {
	// Before anything else: cgroups, /dev/pts and /proc must exist.
	if err := (boot.Boot{Root: cfg.BootRoot, Log: log}).IfPID1(); err != nil {
		log.Error("boot setup incomplete", "err", err)
	}
	d, err := New(cfg, build, log)
	if err != nil {
		return err
	}
	// Plain TCP, not the MPTCP Go listens with by default since 1.24: no
	// client of envd speaks MPTCP, and every connection accepted by an MPTCP
	// listener from a TCP client still goes through the MPTCP layer in
	// fallback mode, on each read and write.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return d.Serve(ctx, ln)
}

// Env exposes the live defaults, for tests that set them without /init.
func (d *Daemon) Env() *execenv.Env { return d.env }
