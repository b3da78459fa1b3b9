package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/envd-dev/envd/client"
)

func (a *app) cmdPs(ctx context.Context, args []string) error {
	fl := newFlags("ps")
	a.jsonFlag(fl)
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 0 {
		return usagef("takes no arguments")
	}
	list, err := a.c.List(ctx)
	if err != nil {
		return err
	}
	if a.json {
		type proc struct {
			PID  uint32            `json:"pid"`
			Tag  string            `json:"tag,omitempty"`
			Cmd  string            `json:"cmd"`
			Args []string          `json:"args"`
			Env  map[string]string `json:"env,omitempty"`
			Dir  string            `json:"cwd,omitempty"`
		}
		out := make([]proc, 0, len(list))
		for _, p := range list {
			args := p.Args
			if args == nil {
				args = []string{}
			}
			out = append(out, proc{p.PID, p.Tag, p.Cmd, args, p.Env, p.Dir})
		}
		return a.printJSON(out)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PID\tTAG\tCOMMAND")
	for _, p := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\n", p.PID, p.Tag, strings.Join(append([]string{p.Cmd}, p.Args...), " "))
	}
	return tw.Flush()
}

var signalNames = map[string]client.Signal{
	"HUP": client.SIGHUP, "INT": client.SIGINT, "QUIT": client.SIGQUIT, "KILL": client.SIGKILL,
	"USR1": client.SIGUSR1, "USR2": client.SIGUSR2, "TERM": client.SIGTERM,
}

func (a *app) cmdKill(ctx context.Context, args []string) error {
	fl := newFlags("kill")
	sigName := fl.String("s", "TERM", "signal: TERM, KILL, INT, HUP, QUIT, USR1, USR2 or a number")
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		return usagef("want PID or @TAG")
	}
	name := strings.TrimPrefix(strings.ToUpper(*sigName), "SIG")
	sig, ok := signalNames[name]
	if !ok {
		n, err := strconv.Atoi(name)
		if err != nil || n <= 0 || n > 64 {
			return usagef("unknown signal %q", *sigName)
		}
		sig = client.Signal(n)
	}
	sel, err := selector(fl.Arg(0))
	if err != nil {
		return err
	}
	if err := a.c.Signal(ctx, sel, sig); err != nil {
		return fmt.Errorf("%s: %w", fl.Arg(0), err)
	}
	return nil
}

func selector(s string) (client.Selector, error) {
	if tag, ok := strings.CutPrefix(s, "@"); ok {
		if tag == "" {
			return client.Selector{}, usagef("empty tag")
		}
		return client.Tag(tag), nil
	}
	pid, err := strconv.ParseUint(s, 10, 32)
	if err != nil || pid == 0 {
		return client.Selector{}, usagef("want PID or @TAG, got %q", s)
	}
	return client.PID(uint32(pid)), nil
}
