package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/envd-dev/envd/client"
	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/envdtest"
)

func TestLogs(t *testing.T) {
	s := envdtest.Start(t)
	if r := ctl(t, s.URL, nil, "run", "--tag", "lg", "--", "sh", "-c", "printf abc; printf xyz >&2; exit 5"); r.code != 5 {
		t.Fatalf("run: %+v", r)
	}
	for _, c := range []struct {
		args []string
		out  string
	}{
		{[]string{"@lg"}, "abc"},
		{[]string{"--stream", "stderr", "@lg"}, "xyz"},
		{[]string{"--offset", "1", "@lg"}, "bc"},
		{[]string{"@lg", "--offset", "2"}, "c"}, // flags after the process too
	} {
		r := ctl(t, s.URL, nil, append([]string{"logs"}, c.args...)...)
		if r.code != 5 || r.stdout != c.out || r.stderr != "" {
			t.Fatalf("logs %v: %+v, want %q and exit 5", c.args, r, c.out)
		}
	}
	oneLineError(t, ctl(t, s.URL, nil, "logs", "@nosuch"), 1, "not found")
	oneLineError(t, ctl(t, s.URL, nil, "logs"), 2, "PID or @TAG")
	oneLineError(t, ctl(t, s.URL, nil, "logs", "--stream", "bogus", "@lg"), 2, "--stream")
	oneLineError(t, ctl(t, s.URL, nil, "logs", "--offset", "-1", "@lg"), 2, "offset")

	// A running process without --follow: what is logged so far, exit 0.
	c := s.NewClient(t)
	ctx := context.Background()
	p, err := c.Start(ctx, client.Cmd{Cmd: "sh", Args: []string{"-c", "echo early; cat; exit 7"}, Tag: "fol"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for {
		ev, err := p.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if string(ev.Stdout) == "early\n" {
			break
		}
	}
	if r := ctl(t, s.URL, nil, "logs", fmt.Sprint(p.PID)); r.code != 0 || r.stdout != "early\n" {
		t.Fatalf("logs of a running process: %+v", r)
	}
	// --follow prints what comes later and ends with the process's status.
	cmd := exec.Command(envdctlBin, "--url", s.URL, "logs", "--follow", "@fol")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.SendInput(ctx, client.PID(p.PID), []byte("late\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseStdin(ctx, client.PID(p.PID)); err != nil {
		t.Fatal(err)
	}
	waitOrKill(t, cmd)
	if code := cmd.ProcessState.ExitCode(); code != 7 || out.String() != "early\nlate\n" || errb.Len() != 0 {
		t.Fatalf("logs --follow: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}

	// Killed by a signal: 128+N, as run.
	k, err := c.Start(ctx, client.Cmd{Cmd: "sleep", Args: []string{"1000"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Signal(ctx, client.PID(k.PID), client.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Wait(nil, nil); err != nil {
		t.Fatal(err)
	}
	if r := ctl(t, s.URL, nil, "logs", fmt.Sprint(k.PID)); r.code != 137 {
		t.Fatalf("logs of a killed process: %+v, want exit 137", r)
	}
}

// Output evicted from envd's log is reported on stderr with its exact size;
// stdout has the kept tail, byte for byte.
func TestLogsGap(t *testing.T) {
	const limit = 1 << 20
	s := envdtest.Start(t, func(c *config.Config) { c.OutputLogLimit = limit })
	c := s.NewClient(t)
	const n = 3<<20 + 5
	res, err := c.Run(context.Background(), client.Cmd{Cmd: "sh", Args: []string{"-c", fmt.Sprintf("yes abcdefg | head -c %d", n)}})
	if err != nil || len(res.Stdout) != n {
		t.Fatalf("run: %v, %d bytes", err, len(res.Stdout))
	}
	r := ctl(t, s.URL, nil, "logs", fmt.Sprint(res.PID))
	kept := len(r.stdout)
	want := fmt.Sprintf("envdctl logs: %d bytes lost at offset 0 (evicted from envd's log)\n", n-kept)
	if r.code != 0 || kept == 0 || kept > limit || r.stderr != want || r.stdout != string(res.Stdout[n-kept:]) {
		t.Fatalf("exit %d, %d bytes kept, stderr %q; want %q", r.code, kept, r.stderr, want)
	}
	// From inside the lost range: the rest of it.
	r = ctl(t, s.URL, nil, "logs", "--offset", "1000", fmt.Sprint(res.PID))
	if want := fmt.Sprintf("envdctl logs: %d bytes lost at offset 1000 (evicted from envd's log)\n", n-kept-1000); r.stderr != want || len(r.stdout) != kept {
		t.Fatalf("from offset 1000: stderr %q, %d bytes; want %q", r.stderr, len(r.stdout), want)
	}
	if strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("stderr %q", r.stderr)
	}
}
