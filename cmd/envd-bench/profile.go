package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/daemon"
)

// serveProfiled runs the daemon in this process, configured exactly as
// envdArgs configures bin/envd, and writes CPU and allocation profiles to dir
// when it is told to stop. envd itself exposes no profiling endpoint; this is
// the same code behind the same wire, with pprof around it.
func serveProfiled(port int, dir string, log io.Writer) int {
	cfg, err := config.Parse(envdArgs(port), log)
	if err != nil {
		fmt.Fprintln(log, "envd-bench: profiled daemon:", err)
		return 2
	}
	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		fmt.Fprintln(log, "envd-bench: profiled daemon:", err)
		return 1
	}
	defer cpu.Close()
	if err := pprof.StartCPUProfile(cpu); err != nil {
		fmt.Fprintln(log, "envd-bench: profiled daemon:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err = daemon.Run(ctx, cfg, daemon.Build{Version: "0.0.0-profiling", Commit: "profiling"},
		slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn})))
	pprof.StopCPUProfile()
	if f, ferr := os.Create(filepath.Join(dir, "allocs.pprof")); ferr == nil {
		_ = pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	if err != nil {
		fmt.Fprintln(log, "envd-bench: profiled daemon:", err)
		return 1
	}
	return 0
}
