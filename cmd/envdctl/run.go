package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/envd-dev/envd/client"
)

func (a *app) cmdRun(ctx context.Context, args []string) error {
	fs := newFlags("run")
	cwd := fs.String("cwd", "", "working directory (default: envd's default workdir, else the user's home)")
	env := kv{}
	fs.Var(env, "env", "K=V environment variable (repeatable)")
	tag := fs.String("tag", "", "tag the process, for kill @TAG and Connect")
	timeout := fs.Duration("timeout", 0, "kill the command after this long (0: never)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("want a command: envdctl run [flags] -- CMD [ARGS...]")
	}
	stdinTTY := isTerminal(a.stdin)
	cmd := client.Cmd{Cmd: fs.Arg(0), Args: fs.Args()[1:], Env: env, Dir: *cwd, Tag: *tag, NoStdin: stdinTTY}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	// Ctrl-C (and SIGTERM, SIGHUP) go to the remote process group instead of
	// killing envdctl; a second Ctrl-C sends SIGKILL. They are caught from
	// before the start, as the process may exist before Start returns: one
	// that arrives meanwhile is held until the PID is known, and a second
	// one then gives up the start (an envd that does not answer).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	started := make(chan *client.Process, 1)
	startCtx, abort := context.WithCancel(ctx)
	defer abort()
	go func() {
		var p *client.Process
		var held []client.Signal
		n := 0
		for {
			select {
			case p = <-started:
				for _, sig := range held {
					a.signal(p, sig)
				}
				held = nil
			case s := <-sigs:
				n++
				sig := client.SIGTERM
				if s == os.Interrupt {
					sig = client.SIGINT
				}
				if n > 1 {
					sig = client.SIGKILL
				}
				switch {
				case p != nil:
					a.signal(p, sig)
				case n > 1:
					abort()
				default:
					held = append(held, sig)
				}
			}
		}
	}()
	p, err := a.c.Start(startCtx, cmd)
	if err != nil {
		if startCtx.Err() != nil && ctx.Err() == nil {
			return exitError(130)
		}
		return err
	}
	defer p.Close()
	started <- p

	if !stdinTTY {
		go a.forwardStdin(ctx, p)
	}
	exit, err := p.Wait(a.stdout, a.stderr)
	if err != nil {
		return err
	}
	if code := exit.ShellCode(); code != 0 {
		return exitError(code)
	}
	return nil
}

// signal delivers sig. This envd takes any standard signal number; older
// ones and E2B's know only TERM and KILL (they answer InvalidArgument or
// Unimplemented), so for them it falls back to SIGTERM.
func (a *app) signal(p *client.Process, sig client.Signal) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.Signal(ctx, sig)
	if (errors.Is(err, client.ErrUnimplemented) || errors.Is(err, client.ErrInvalidArgument)) && sig != client.SIGKILL {
		err = p.Signal(ctx, client.SIGTERM)
	}
	if err != nil && !errors.Is(err, client.ErrNotFound) {
		fmt.Fprintf(a.stderr, "envdctl run: signal: %s\n", oneLine(err))
	}
}

// forwardStdin streams local stdin to the process and closes its stdin at
// EOF.
func (a *app) forwardStdin(ctx context.Context, p *client.Process) {
	w, err := p.Stdin(ctx)
	if err != nil {
		fmt.Fprintf(a.stderr, "envdctl run: stdin: %s\n", oneLine(err))
		return
	}
	if _, err := io.Copy(w, a.stdin); err != nil && !errors.Is(err, io.ErrClosedPipe) && !errors.Is(err, client.ErrNotFound) {
		fmt.Fprintf(a.stderr, "envdctl run: stdin: %s\n", oneLine(err))
	}
	// The process may have exited already: then there is nothing to close.
	if err := w.Close(); err != nil && !errors.Is(err, client.ErrNotFound) && !errors.Is(err, client.ErrCanceled) {
		fmt.Fprintf(a.stderr, "envdctl run: stdin: %s\n", oneLine(err))
	}
}

func (a *app) cmdShell(ctx context.Context, args []string) error {
	fs := newFlags("shell")
	cwd := fs.String("cwd", "", "working directory")
	env := kv{}
	fs.Var(env, "env", "K=V environment variable (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cmd := client.Cmd{Cmd: "/bin/bash", Args: []string{"-l"}, Env: env, Dir: *cwd}
	if fs.NArg() > 0 {
		cmd.Cmd, cmd.Args = fs.Arg(0), fs.Args()[1:]
	}
	// As the SDK's terminals: a terminal type and a UTF-8 locale, as nothing
	// is inherited from envd.
	termName := os.Getenv("TERM")
	if termName == "" {
		termName = "xterm-256color"
	}
	for k, v := range map[string]string{"TERM": termName, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"} {
		if _, set := env[k]; !set {
			env[k] = v
		}
	}
	in, _ := a.stdin.(*os.File)
	out, _ := a.stdout.(*os.File)
	size := client.Size{Cols: 80, Rows: 24}
	if out != nil && term.IsTerminal(int(out.Fd())) {
		if w, h, err := term.GetSize(int(out.Fd())); err == nil {
			size = client.Size{Cols: uint32(w), Rows: uint32(h)}
		}
	}
	cmd.PTY = &size

	p, err := a.c.Start(ctx, cmd)
	if err != nil {
		return err
	}
	defer p.Close()

	// Raw mode from here on; every way out of this function restores it, and
	// a signal that would end envdctl is turned into a return.
	if in != nil && term.IsTerminal(int(in.Fd())) {
		old, err := term.MakeRaw(int(in.Fd()))
		if err != nil {
			return fmt.Errorf("raw mode: %w", err)
		}
		defer term.Restore(int(in.Fd()), old)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGWINCH, syscall.SIGTERM, syscall.SIGHUP, os.Interrupt)
	defer signal.Stop(sigs)
	ended := make(chan error, 1)
	go func() {
		exit, err := p.Wait(a.stdout, a.stderr)
		if err == nil && exit.ShellCode() != 0 {
			err = exitError(exit.ShellCode())
		}
		ended <- err
	}()
	go a.forwardKeys(ctx, p)
	for {
		select {
		case err := <-ended:
			return err
		case s := <-sigs:
			if s != syscall.SIGWINCH {
				return exitError(128 + int(s.(syscall.Signal)))
			}
			if out == nil {
				continue
			}
			if w, h, err := term.GetSize(int(out.Fd())); err == nil {
				if err := p.Resize(ctx, client.Size{Cols: uint32(w), Rows: uint32(h)}); err != nil && !errors.Is(err, client.ErrNotFound) {
					return err
				}
			}
		}
	}
}

// forwardKeys sends what is typed to the terminal as it is read.
func (a *app) forwardKeys(ctx context.Context, p *client.Process) {
	w, err := p.Stdin(ctx)
	if err != nil {
		return
	}
	defer w.Close()
	buf := make([]byte, 4096)
	for {
		n, err := a.stdin.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
