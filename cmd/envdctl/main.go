// Command envdctl drives an envd from a terminal: run commands, open a shell,
// copy files in and out, look at the filesystem and processes, init and
// health-check it.
//
//	envdctl [--url URL] [--token T] [--user U] [--json] COMMAND [ARGS]
//
// Errors are one line on stderr and exit status 1 (2 for bad usage); `run`,
// `shell` and `logs` exit with the remote command's status (128+N when
// killed by signal N).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/envd-dev/envd/client"
)

const usage = `usage: envdctl [--url URL] [--token T] [--user U] [--json] COMMAND [ARGS]

commands:
  run [--cwd D] [--env K=V]... [--tag T] [--timeout D] -- CMD [ARGS...]
                         run a command, stream its output, exit with its status
  shell [CMD [ARGS...]]  interactive terminal (default: /bin/bash -l)
  cp [-r] [--gzip] SRC DST
                         copy; one side is :REMOTE (e.g. cp big.tar :/home/user/), - is stdin/stdout
  ls [-l] [--depth N] [PATH]
  stat PATH
  mkdir [-p] PATH...
  mv SRC DST
  rm [-r] [-f] PATH...
  watch [-r] PATH        print changes under PATH until interrupted
  ps                     list processes
  kill [-s SIG] PID|@TAG send a signal (TERM, KILL, INT, HUP, QUIT, USR1, USR2 or a number; default TERM)
  logs [--follow] [--offset N] [--stream stdout|stderr|pty] PID|@TAG
                         print a process's output from envd's log (lost bytes reported on
                         stderr); exits with its status once it has ended
  init [--token T] [--user U] [--workdir D] [--env K=V]...
  health [--wait D]      print envd's version; --wait polls until healthy

global flags (also from $ENVD_URL, $ENVD_TOKEN, $ENVD_USER):
`

// app is one invocation: the client and where output goes.
type app struct {
	c      *client.Client
	json   bool
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// exitError carries an exit status that is not a failure of envdctl itself
// (the remote command's status).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// usageError is a mistake in the command line: exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("envdctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // a bad flag is one line below; -h prints it all
	url := fs.String("url", envOr("ENVD_URL", client.DefaultURL), "envd base URL")
	token := fs.String("token", os.Getenv("ENVD_TOKEN"), "access token (X-Access-Token)")
	user := fs.String("user", os.Getenv("ENVD_USER"), "sandbox user to act as (default: envd's default user)")
	asJSON := fs.Bool("json", false, "machine-readable output for ls, stat, ps, watch")
	h2c := fs.Bool("h2c", false, "HTTP/2 without TLS instead of HTTP/1.1")
	printUsage := func() {
		fmt.Fprint(os.Stderr, usage)
		fs.SetOutput(os.Stderr)
		fs.PrintDefaults()
	}
	fs.Usage = func() {} // flag calls it on every parse error too
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage()
			return 0
		}
		fmt.Fprintf(os.Stderr, "envdctl: %v (envdctl --help lists the flags)\n", err)
		return 2
	}
	if fs.NArg() == 0 {
		printUsage()
		return 2
	}
	opts := []client.Option{client.WithToken(*token), client.WithUser(*user)}
	if *h2c {
		opts = append(opts, client.WithH2C())
	}
	c, err := client.New(*url, opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "envdctl: --url %s: %v\n", *url, err)
		return 2
	}
	a := &app{c: c, json: *asJSON, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	name, rest := fs.Arg(0), fs.Args()[1:]
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "envdctl: unknown command %q (envdctl --help lists them)\n", name)
		return 2
	}
	err = cmd(a, context.Background(), rest)
	var code exitError
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "envdctl %s: %s\n", name, ue.msg)
		return 2
	default:
		fmt.Fprintf(os.Stderr, "envdctl %s: %s\n", name, oneLine(err))
		return 1
	}
}

var commands = map[string]func(*app, context.Context, []string) error{
	"run":    (*app).cmdRun,
	"shell":  (*app).cmdShell,
	"cp":     (*app).cmdCp,
	"ls":     (*app).cmdLs,
	"stat":   (*app).cmdStat,
	"mkdir":  (*app).cmdMkdir,
	"mv":     (*app).cmdMv,
	"rm":     (*app).cmdRm,
	"watch":  (*app).cmdWatch,
	"ps":     (*app).cmdPs,
	"kill":   (*app).cmdKill,
	"logs":   (*app).cmdLogs,
	"init":   (*app).cmdInit,
	"health": (*app).cmdHealth,
}

// oneLine renders an error for people: envd's kind and message, no "envd
// process.Start" plumbing, on one line.
func oneLine(err error) string {
	var e *client.Error
	msg := err.Error()
	if errors.As(err, &e) {
		// Keep what envdctl added in front ("PATH: "), drop the Op.
		msg = strings.TrimSuffix(msg, e.Error()) + e.Kind.Error()
		if e.Message != "" {
			msg += ": " + e.Message
		}
		if errors.Is(err, client.ErrUnavailable) && e.Status == 0 && e.Code == 0 {
			msg = "cannot reach envd: " + e.Message
		}
		if errors.Is(err, client.ErrUnauthenticated) && !strings.Contains(msg, "user") {
			msg += " (set --token or $ENVD_TOKEN)"
		}
	}
	return strings.Join(strings.Fields(msg), " ")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// newFlags is a subcommand's flag set; parse errors become usage errors.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("envdctl "+name, flag.ContinueOnError)
	// Errors are reported once, on one line, by run; -h prints the flags.
	fs.SetOutput(io.Discard)
	return fs
}

// kv collects repeated K=V flags.
type kv map[string]string

func (m kv) String() string { return "" }

func (m kv) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want K=V, got %q", s)
	}
	m[k] = v
	return nil
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fmt.Fprintf(os.Stderr, "usage of %s:\n", fs.Name())
			fs.PrintDefaults()
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}
