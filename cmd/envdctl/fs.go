package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/envd-dev/envd/client"
)

func (a *app) jsonFlag(fl interface {
	BoolVar(*bool, string, bool, string)
}) {
	fl.BoolVar(&a.json, "json", a.json, "machine-readable output")
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) cmdLs(ctx context.Context, args []string) error {
	fl := newFlags("ls")
	long := fl.Bool("l", false, "long listing: permissions, owner, group, size, time")
	depth := fl.Int("depth", 1, "levels to descend")
	a.jsonFlag(fl)
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() > 1 {
		return usagef("want at most one PATH")
	}
	dir := fl.Arg(0) // empty: envd's default workdir or the user's home
	entries, err := a.c.ListDir(ctx, dir, *depth)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if a.json {
		if entries == nil {
			entries = []client.Entry{}
		}
		return a.printJSON(entries)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 1, ' ', 0)
	for _, e := range entries {
		name := e.Name
		if *depth > 1 && dir != "" {
			name = strings.TrimPrefix(e.Path, strings.TrimSuffix(dir, "/")+"/")
		}
		if e.Type == client.TypeDir {
			name += "/"
		}
		if !*long {
			fmt.Fprintln(a.stdout, name)
			continue
		}
		if e.SymlinkTarget != "" {
			name += " -> " + e.SymlinkTarget
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", e.Permissions, e.Owner, e.Group, e.Size, e.ModTime.Local().Format("2006-01-02 15:04"), name)
	}
	return tw.Flush()
}

func (a *app) cmdStat(ctx context.Context, args []string) error {
	fl := newFlags("stat")
	a.jsonFlag(fl)
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		return usagef("want one PATH")
	}
	e, err := a.c.Stat(ctx, fl.Arg(0))
	if err != nil {
		return fmt.Errorf("%s: %w", fl.Arg(0), err)
	}
	if a.json {
		return a.printJSON(e)
	}
	fmt.Fprintf(a.stdout, "  path: %s\n  type: %s\n  size: %d\n  mode: %s (%04o)\n owner: %s:%s\n mtime: %s\n",
		e.Path, e.Type, e.Size, e.Permissions, uint32(e.Mode.Perm()), e.Owner, e.Group, e.ModTime.Local().Format(time.RFC3339Nano))
	if e.SymlinkTarget != "" {
		fmt.Fprintf(a.stdout, "target: %s\n", e.SymlinkTarget)
	}
	for k, v := range e.Metadata {
		fmt.Fprintf(a.stdout, "  meta: %s=%s\n", k, v)
	}
	return nil
}

func (a *app) cmdMkdir(ctx context.Context, args []string) error {
	fl := newFlags("mkdir")
	parents := fl.Bool("p", false, "create parents as needed; an existing directory is no error")
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() == 0 {
		return usagef("want PATH...")
	}
	for _, p := range fl.Args() {
		if !*parents {
			// envd always creates parents; without -p behave as mkdir(1).
			parent := path.Dir(strings.TrimSuffix(p, "/"))
			if e, err := a.c.Stat(ctx, parent); err != nil {
				return fmt.Errorf("%s: %w", parent, err)
			} else if e.Type != client.TypeDir {
				return fmt.Errorf("%s: not a directory", parent)
			}
		}
		_, err := a.c.MakeDir(ctx, p)
		if *parents && errors.Is(err, client.ErrAlreadyExists) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func (a *app) cmdMv(ctx context.Context, args []string) error {
	fl := newFlags("mv")
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 2 {
		return usagef("want SRC DST")
	}
	src, dst := fl.Arg(0), fl.Arg(1)
	if e, err := a.c.Stat(ctx, dst); err == nil && e.Type == client.TypeDir {
		dst = path.Join(dst, path.Base(src))
	}
	if _, err := a.c.Move(ctx, src, dst); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	return nil
}

func (a *app) cmdRm(ctx context.Context, args []string) error {
	fl := newFlags("rm")
	recursive := fl.Bool("r", false, "remove directories and their contents")
	force := fl.Bool("f", false, "a missing path is no error")
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() == 0 {
		return usagef("want PATH...")
	}
	for _, p := range fl.Args() {
		e, err := a.c.Stat(ctx, p)
		if errors.Is(err, client.ErrNotFound) && *force {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if e.Type == client.TypeDir && e.SymlinkTarget == "" && !*recursive {
			return fmt.Errorf("%s: is a directory (use -r)", p)
		}
		if err := a.c.Remove(ctx, p); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func (a *app) cmdWatch(ctx context.Context, args []string) error {
	fl := newFlags("watch")
	recursive := fl.Bool("r", false, "watch the whole subtree")
	a.jsonFlag(fl)
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		return usagef("want one PATH")
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	w, err := a.c.Watch(ctx, fl.Arg(0), client.WatchOptions{Recursive: *recursive, IncludeEntry: a.json})
	if err != nil {
		return fmt.Errorf("%s: %w", fl.Arg(0), err)
	}
	defer w.Close()
	enc := json.NewEncoder(a.stdout)
	for ev := range w.Events() {
		if a.json {
			if err := enc.Encode(ev); err != nil {
				return err
			}
			continue
		}
		if _, err := fmt.Fprintf(a.stdout, "%-6s %s\n", ev.Op, ev.Name); err != nil {
			return err
		}
	}
	return w.Err()
}
