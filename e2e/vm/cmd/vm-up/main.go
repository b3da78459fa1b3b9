// Command vm-up boots the envd VM image under qemu and stays in the
// foreground until SIGTERM or SIGINT, which shut the guest down in order
// (Ctrl-Alt-Del through QMP). Run it through scripts/vm-up, which builds the
// image first. See README.md, "Boot envd in a VM on this machine".
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/envd-dev/envd/e2e/vm"
)

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("vm-up", flag.ContinueOnError)
	port := fs.Int("port", 0, "host port forwarded to envd's 49983 (default: a free one)")
	qmp := fs.String("qmp", "", "also expose qemu's QMP socket at this path")
	incoming := fs.String("incoming", "", "resume the state QMP migrate saved to this file (its disk: FILE.disk) instead of booting")
	mem := fs.Int("mem", 1024, "guest memory in MiB")
	image := fs.String("image", ".cache/vm/current", "image directory made by scripts/vm-image")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "vm-up: unexpected arguments %q\n", fs.Args())
		return 2
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "vm-up: "+format+"\n", args...) }
	if _, err := vm.QemuBinary(); err != nil {
		logf("%v", err)
		return 1
	}
	work, err := os.MkdirTemp("", "envd-vm-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(work)
		}
	}()

	accel := vm.ChooseAccel(*image, work)
	logf("accelerator %s", accel)

	id := make([]byte, 8)
	rand.Read(id)
	md := map[string]any{"instanceID": "vm-" + hex.EncodeToString(id), "envID": "envd-vm", "address": "", "accessTokenHash": ""}
	mmds, err := vm.ServeMMDS(md)
	if err != nil {
		logf("MMDS: %v", err)
		return 1
	}
	defer mmds.Close()
	mdj, _ := json.Marshal(md)
	logf("MMDS v2 for the guest's 169.254.169.254 on 127.0.0.1:%d: %s", mmds.Port, mdj)

	cfg := vm.Config{Image: *image, WorkDir: work, Port: *port, MemMiB: *mem, QMPPath: *qmp, MMDSPort: mmds.Port, Accel: accel, Log: os.Stderr}
	if *incoming != "" {
		cfg.Incoming = *incoming
		cfg.Disk = filepath.Join(work, "disk.qcow2")
		// A new layer over the saved disk leaves FILE.disk as it was, so the
		// same state can be resumed again.
		if err := vm.NewOverlay(cfg.Disk, *incoming+".disk", "qcow2"); err != nil {
			logf("the disk saved with %s: %v", *incoming, err)
			return 1
		}
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	m, err := vm.Start(cfg)
	if err != nil {
		logf("%v", err)
		return 1
	}
	logf("qemu pid %d; serial console %s; disk %s", m.PID(), m.Console, m.Disk)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	healthy := make(chan error, 1)
	go func() {
		if cfg.Incoming != "" {
			if err := m.Resume(60 * time.Second); err != nil {
				healthy <- err
				return
			}
		}
		timeout := 180 * time.Second // TCG on two busy cores
		if accel.Name == "kvm" {
			timeout = 60 * time.Second
		}
		_, err := m.WaitHealthy(ctx, timeout)
		healthy <- err
	}()
	select {
	case err := <-healthy:
		if err != nil {
			logf("%v", err)
			m.Kill()
			return 1
		}
	case sig := <-sigc:
		logf("%v before envd answered: stopping qemu", sig)
		m.Kill()
		return 1
	}
	fmt.Printf("envd at %s (qemu pid %d)\n", m.URL, m.PID())

	select {
	case <-m.Done():
		logf("qemu exited by itself: %v\n--- serial console (last 20 lines)\n%s", m.ExitErr(), m.ConsoleTail(20))
		return 1
	case sig := <-sigc:
		logf("%v: shutting the guest down", sig)
	}
	if migrated(m) {
		// A stopped, migrated VM cannot shut down in order; its disk is
		// what a resume of the saved state needs.
		keep = true
		m.Kill()
		logf("the VM was migrated: its disk stays at %s; copy it to FILE.disk beside the saved state FILE to resume with --incoming FILE", m.Disk)
		return 0
	}
	took, err := m.Shutdown(30 * time.Second)
	if err != nil {
		logf("%v", err)
		return 1
	}
	logf("guest shut down in %s (%v)", took.Round(time.Millisecond), m.ExitErr())
	return 0
}

// migrated reports whether this VM was migrated away: stopped in
// postmigrate. (query-migrate alone also says "completed" on a VM that was
// itself resumed from an incoming migration.)
func migrated(m *vm.Machine) bool {
	st, err := m.QMP.Status()
	return err == nil && st == "postmigrate"
}
