// Package config holds envd's start-up configuration and parses it from the
// command line. It has no flag globals: Parse builds a fresh FlagSet each call,
// so tests and main share one code path.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// DefaultPort is the port every envd client dials.
const DefaultPort = 49983

// Config is everything envd needs to know before it starts serving.
type Config struct {
	Port        int
	IsNotFC     bool // not inside Firecracker: no MMDS, no log exporter, text logs
	Version     bool // print the version and exit
	Commit      bool // print the build commit and exit
	Cmd         string
	CgroupRoot  string
	NoCgroups   bool
	Verbose     bool
	ListenHost  string // "" means every address, as in a VM
	MMDSAddress string // base URL of Firecracker's metadata service
	ProcRoot    string // where /proc is mounted; tests point it elsewhere
	RunDir      string // where the sandbox env files go (RunDir/wrenn, RunDir/e2b); tests point it elsewhere
	BootRoot    string // root under which PID-1 setup mounts; tests use a directory in a private mount namespace
	// TrustRoot is the root under which /init caBundle finds the system trust
	// store; "" means "/" inside a VM and none with --isnotfc (a developer's
	// trust store is not envd's). Tests point it at a temp dir.
	TrustRoot string
	// ReapOrphans makes envd wait for every child, orphans included (as PID 1
	// or child subreaper). Only main sets it: it would steal the exit status
	// of os/exec children in a test binary hosting the daemon.
	ReapOrphans bool
	// FreezeRoot is the filesystem POST /fsfreeze freezes (FIFREEZE): "/"
	// when Parse sees no --isnotfc, else empty, which the route refuses. A
	// test that plays a VM by setting IsNotFC=false after parsing keeps it
	// empty, so no test can freeze the root filesystem of the machine it
	// runs on.
	FreezeRoot string
	// ResumeHandover: this process image was exec'd by a live upgrade
	// (§18.1) and takes over from the handover blob.
	ResumeHandover bool
	// OutputLogLimit bounds the output kept per process for envd.v1.Output
	// (negative: keep none); OutputLogTotal bounds all processes together.
	OutputLogLimit int64
	OutputLogTotal int64
}

// ErrHelp is returned when the user asked for -h/--help; usage was printed.
var ErrHelp = flag.ErrHelp

// Parse reads args (without the program name) with Go flag semantics, so both
// -port 1 and --port 1 are accepted, as the host agents and orchestrators rely on.
func Parse(args []string, usage io.Writer) (Config, error) {
	c := Config{
		Port:        DefaultPort,
		CgroupRoot:  "/sys/fs/cgroup",
		MMDSAddress: "http://169.254.169.254",
		ProcRoot:    "/proc",
		RunDir:      "/run",
		BootRoot:    "/",

		OutputLogLimit: 16 << 20,
		OutputLogTotal: 64 << 20,
	}
	fs := flag.NewFlagSet("envd", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.IntVar(&c.Port, "port", c.Port, "port to listen on")
	fs.BoolVar(&c.IsNotFC, "isnotfc", false, "not running inside a Firecracker VM: skip MMDS, log as text")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
	fs.BoolVar(&c.Commit, "commit", false, "print the build commit and exit")
	fs.StringVar(&c.Cmd, "cmd", "", "command to start at boot, run as /bin/bash -l -c <cmd> with tag startCmd")
	fs.StringVar(&c.CgroupRoot, "cgroup-root", c.CgroupRoot, "cgroup v2 root under which envd creates its groups")
	fs.BoolVar(&c.NoCgroups, "no-cgroups", false, "do not place processes in cgroups")
	fs.BoolVar(&c.Verbose, "verbose", false, "log to stdout as text, at debug level")
	// Appended by POST /upgrade to the new image's arguments; repeated by chained upgrades.
	fs.BoolVar(&c.ResumeHandover, "resume-handover", false, "take over from a live upgrade's handover blob")
	fs.Int64Var(&c.OutputLogLimit, "output-log-size", c.OutputLogLimit, "bytes of output kept per process for envd.v1.Output (negative: none)")
	fs.Int64Var(&c.OutputLogTotal, "output-log-total", c.OutputLogTotal, "bytes of output kept for all processes together")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.Port < 0 || c.Port > 65535 {
		return c, errors.New("port must be between 0 and 65535")
	}
	if !c.IsNotFC {
		c.FreezeRoot = "/"
	}
	return c, nil
}
