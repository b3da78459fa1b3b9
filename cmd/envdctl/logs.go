package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/envd-dev/envd/client"
)

var outputStreams = map[string]client.OutputStream{"stdout": client.Stdout, "stderr": client.Stderr, "pty": client.PTY}

// cmdLogs prints a process's output from envd's log. Evicted bytes are
// reported on stderr with their exact count, since the output alone cannot
// show a hole; the exit status is the process's once it has ended.
func (a *app) cmdLogs(ctx context.Context, args []string) error {
	fl := newFlags("logs")
	follow := fl.Bool("follow", false, "keep printing output as it comes, until the process ends")
	fl.BoolVar(follow, "f", false, "short for --follow")
	offset := fl.Uint64("offset", 0, "byte of the stream to start at")
	stream := fl.String("stream", "stdout", "stdout, stderr or pty")
	// Flags may come after PID|@TAG too.
	var pos []string
	for {
		if err := parse(fl, args); err != nil {
			return err
		}
		if fl.NArg() == 0 {
			break
		}
		pos = append(pos, fl.Arg(0))
		args = fl.Args()[1:]
	}
	if len(pos) != 1 {
		return usagef("want PID or @TAG")
	}
	which, ok := outputStreams[*stream]
	if !ok {
		return usagef("--stream: want stdout, stderr or pty, got %q", *stream)
	}
	sel, err := selector(pos[0])
	if err != nil {
		return err
	}
	r, err := a.c.ReadOutput(ctx, sel, client.ReadOptions{Stream: which, Offset: *offset, Follow: *follow})
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	defer r.Close()
	for {
		ev, err := r.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		switch {
		case ev.Gap != nil:
			fmt.Fprintf(a.stderr, "envdctl logs: %d bytes lost at offset %d (evicted from envd's log)\n", ev.Gap.Dropped, ev.Gap.Offset)
		case ev.Exit != nil:
			if code := ev.Exit.ShellCode(); code != 0 {
				return exitError(code)
			}
			return nil
		default:
			if _, err := a.stdout.Write(ev.Data); err != nil {
				return err
			}
		}
	}
}
