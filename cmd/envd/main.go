// Command envd is the guest agent of a microVM sandbox. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/daemon"
)

// Stamped at build time: -ldflags "-X main.version=0.7.0 -X main.commit=$(git rev-parse HEAD)".
var (
	version = "0.7.0"
	commit  = "unknown"
)

func main() {
	cfg, err := config.Parse(os.Args[1:], os.Stderr)
	if errors.Is(err, config.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "envd:", err)
		os.Exit(2)
	}
	switch {
	case cfg.Version:
		fmt.Println(version)
		return
	case cfg.Commit:
		fmt.Println(commit)
		return
	}
	cfg.ReapOrphans = true
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := daemon.Run(ctx, cfg, daemon.Build{Version: version, Commit: commit}, newLogger(cfg)); err != nil {
		fmt.Fprintln(os.Stderr, "envd:", err)
		os.Exit(1)
	}
}

// newLogger logs JSON inside a VM, where a collector reads it, and text on a
// developer's terminal (--isnotfc or --verbose).
func newLogger(cfg config.Config) *slog.Logger {
	level := slog.LevelInfo
	if cfg.Verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.IsNotFC || cfg.Verbose {
		return slog.New(slog.NewTextHandler(os.Stdout, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stdout, opts))
}
