package daemon

import (
	"context"
	"os"
	"syscall"

	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/proc"
)

// startCmd runs the --cmd start command (§8.6): /bin/bash -l -c <cmd> as
// root in /home/user (root's home if that is missing), tag startCmd, stdin
// open, no time limit. Nobody is subscribed: its output reaches only the
// output log (envd.v1.Output) until a client Connects.
func (d *Daemon) startCmd(cmd string) {
	root, err := execenv.LookupUser("root")
	if err != nil {
		d.log.Error("start command: look up root", "err", err)
		return
	}
	cwd := "/home/user"
	if fi, err := os.Stat(cwd); err != nil || !fi.IsDir() {
		cwd = root.Home
	}
	p, _, err := d.procs.Start(proc.StartOptions{
		Config: proc.Config{Cmd: "/bin/bash", Args: []string{"-l", "-c", cmd}, Cwd: &cwd},
		User:   root,
		Tag:    "startCmd",
		HasTag: true,
		Stdin:  true,
	})
	if err != nil {
		d.log.Error("start command failed", "cmd", cmd, "err", err)
		return
	}
	d.log.Info("start command running", "cmd", cmd, "pid", p.Pid())
	go func() {
		r := p.Result()
		d.log.Info("start command ended", "cmd", cmd, "pid", p.Pid(), "status", r.Status)
	}()
}

// killProcesses SIGKILLs every process group still running and waits, up to
// ctx, for them to be reaped, so none outlives an in-process daemon.
func (d *Daemon) killProcesses(ctx context.Context) {
	live := d.procs.Live()
	for _, p := range live {
		_ = p.Signal(syscall.SIGKILL)
	}
	for _, p := range live {
		select {
		case <-p.Done():
		case <-ctx.Done():
			d.log.Warn("process not reaped at shutdown", "pid", p.Pid())
			return
		}
	}
}
