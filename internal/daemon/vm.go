package daemon

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/cgroup"
	"github.com/envd-dev/envd/internal/clock"
	"github.com/envd-dev/envd/internal/mmds"
	"github.com/envd-dev/envd/internal/portfwd"
	"github.com/envd-dev/envd/internal/portscan"
)

// vm holds the parts that only make sense inside a Firecracker VM: cgroups,
// MMDS, port forwarding and the snapshot/restore hooks. Each part is nil when
// the configuration turns it off.
type vm struct {
	cgroups *cgroup.Manager
	mmds    *mmds.Service      // nil with --isnotfc
	fwd     *portfwd.Forwarder // nil with --isnotfc
	srv     atomic.Pointer[http.Server]
	// restored is set by /snapshot/prepare: the next /health or /init is
	// the first request after a restore and brings the paused parts back.
	restored atomic.Bool
	wg       sync.WaitGroup
	// onFork undoes envd's OOM protection in each new process; nil when
	// envd is not protected.
	onFork func(pid int)
}

// setupVM builds the VM parts and fills the HTTP hooks. It starts nothing.
func (d *Daemon) setupVM() {
	cfg, log := d.cfg, d.log
	if cfg.NoCgroups {
		d.vm.cgroups = cgroup.Disabled()
	} else {
		meminfo, _ := os.ReadFile(filepath.Join(cfg.ProcRoot, "meminfo"))
		d.vm.cgroups = cgroup.Open(cfg.CgroupRoot, meminfo, log)
	}
	if d.vm.cgroups.Enabled() {
		d.placer = d.vm.cgroups
	}
	if cfg.IsNotFC {
		return
	}
	// Outside a VM none of this is ours to change: the host's OOM scores,
	// its clock, its ports.
	oom := cgroup.OOM{ProcRoot: cfg.ProcRoot}
	if err := oom.Protect(); err != nil {
		log.Warn("protect envd from the OOM killer", "err", err)
	} else {
		// Children inherit envd's score; give each its own right after fork.
		d.vm.onFork = func(pid int) {
			err := oom.Reset(pid)
			switch {
			case err == nil:
			case errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH):
				// Already exited and reaped: nothing left to protect.
				log.Debug("reset oom_score_adj of a new process", "pid", pid, "err", err)
			default:
				log.Warn("reset oom_score_adj of a new process", "pid", pid, "err", err)
			}
		}
	}
	if err := d.vm.cgroups.Join(cgroup.Envd, 0); err != nil {
		log.Warn("move envd into its cgroup", "err", err)
	}
	d.vm.mmds = &mmds.Service{
		Client: &mmds.Client{
			BaseURL: cfg.MMDSAddress,
			// No keep-alive: a pooled connection would not survive a restore.
			HTTP: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		},
		Env:    d.env,
		RunDir: cfg.RunDir,
		Log:    log,
	}
	if err := d.vm.mmds.WriteMode(true); err != nil {
		log.Warn("write sandbox env files", "err", err)
	}
	d.initAPI.AccessTokenHash = d.vm.mmds.Client.AccessTokenHash
	d.initAPI.SetClock = clock.Realtime{}.Set
	d.vm.fwd = &portfwd.Forwarder{Scan: portscan.Scanner{ProcRoot: cfg.ProcRoot}.Loopback, Log: log}
	d.initAPI.AfterInit = d.afterInit
	d.snapshotAPI.Quiesce = append(d.snapshotAPI.Quiesce, d.quiesce)
}

// forwarded lists the ports forwarded now, for port events.
func (v *vm) forwarded() []uint16 {
	if v.fwd == nil {
		return nil
	}
	return v.fwd.Ports()
}

// startVM runs MMDS polling and port forwarding until ctx ends.
func (d *Daemon) startVM(ctx context.Context, srv *http.Server) {
	d.vm.srv.Store(srv)
	if d.vm.mmds != nil {
		d.vm.wg.Go(func() {
			if _, err := d.vm.mmds.Poll(ctx); err != nil {
				d.log.Warn("boot MMDS poll ended without metadata", "err", err)
			}
		})
	}
	if d.vm.fwd != nil {
		d.vm.wg.Go(func() { _ = d.vm.fwd.Run(ctx) })
	}
}

// stopVM waits for what startVM started; its ctx must be done.
func (d *Daemon) stopVM() {
	if d.vm.mmds != nil {
		d.vm.mmds.Stop()
	}
	d.vm.wg.Wait()
	d.vm.cgroups.Close()
}

// quiesce is /snapshot/prepare's hook: no listener of envd's forwarding and
// no idle keep-alive connection should be captured in the snapshot, since
// the peers on the host side will be gone after the restore. Keep-alives
// stay off (each response closes its connection) until the first request
// after the restore.
func (d *Daemon) quiesce(context.Context) {
	d.vm.restored.Store(true)
	if d.vm.fwd != nil {
		d.vm.fwd.Pause()
	}
	if srv := d.vm.srv.Load(); srv != nil {
		srv.SetKeepAlivesEnabled(false) // also closes the idle connections
	}
	d.log.Info("quiesced for snapshot")
}

// recoverAfterRestore wraps /health and /init: the host agent calls one of
// them first after resuming the VM.
func (d *Daemon) recoverAfterRestore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.vm.restored.CompareAndSwap(true, false) {
			if srv := d.vm.srv.Load(); srv != nil {
				srv.SetKeepAlivesEnabled(true)
			}
			if d.vm.fwd != nil {
				d.vm.fwd.Resume()
			}
			d.log.Info("resumed after restore", "by", r.URL.Path)
		}
		next.ServeHTTP(w, r)
	})
}

// afterInit resumes forwarding (a no-op unless paused) and re-reads MMDS,
// which holds the new sandbox id after a restore (§7.4 steps 7–8).
func (d *Daemon) afterInit(ctx context.Context) {
	if d.vm.fwd != nil {
		d.vm.fwd.Resume()
	}
	if d.vm.mmds != nil {
		d.vm.mmds.Repoll(ctx)
	}
}

// syncFilesystems flushes dirty pages before exit: in a VM the host may stop
// the machine right after envd ends.
func (d *Daemon) syncFilesystems() {
	if d.cfg.IsNotFC && os.Getpid() != 1 {
		return // a developer's machine or a test binary: not ours to flush
	}
	unix.Sync()
	d.log.Info("shutdown: filesystems synced")
}
