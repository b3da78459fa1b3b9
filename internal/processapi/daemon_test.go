package processapi_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/envdtest"
	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
)

// The daemon mounts the service, runs --cmd as §8.6 says, and kills what is
// still running when it stops.
func TestDaemonStartCommand(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the start command runs as root")
	}
	dir := t.TempDir()
	marker := filepath.Join(dir, "started")
	cmd := "id -u > " + marker + "; exec sleep 1000"
	var pidfd int
	t.Run("running", func(t *testing.T) {
		srv := envdtest.Start(t, func(c *config.Config) { c.Cmd = cmd })
		c := processconnect.NewProcessClient(srv.Client, srv.URL, connect.WithProtoJSON())
		list, err := c.List(t.Context(), &pb.ListRequest{})
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(list.GetProcesses(), func(p *pb.ProcessInfo) bool { return p.GetTag() == "startCmd" })
		if i < 0 {
			t.Fatalf("no startCmd process in %v", list)
		}
		p := list.GetProcesses()[i]
		if cfg := p.GetConfig(); cfg.GetCmd() != "/bin/bash" || !slices.Equal(cfg.GetArgs(), []string{"-l", "-c", cmd}) {
			t.Fatalf("start command config %v", cfg)
		}
		// Nobody is attached to its output; the marker file shows it ran,
		// as root.
		if pidfd, err = unix.PidfdOpen(int(p.GetPid()), 0); err != nil {
			t.Fatal(err)
		}
		ev := run(t, c, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sh", Args: []string{"-c", "while [ ! -s " + marker + " ]; do sleep 0.01; done; cat " + marker}}})
		if string(ev.stdout) != "0\n" {
			t.Fatalf("start command wrote %q", ev.stdout)
		}
	})
	defer unix.Close(pidfd)
	if err := waitExit(pidfd); err != nil {
		t.Fatalf("start command survived daemon shutdown: %v", err)
	}
}
