package daemon

import (
	"path/filepath"

	"github.com/envd-dev/envd/internal/cabundle"
	"github.com/envd-dev/envd/internal/volumes"
)

// setupOrchestrated wires /init's volumeMounts and caBundle. Mount commands
// are forked through the reaper, which as PID 1 waits for every child.
func (d *Daemon) setupOrchestrated() {
	d.orch.volumes = volumes.New(volumes.Command(d.reaper), d.log)
	d.initAPI.MountVolumes = d.orch.volumes.MountAll
	root := d.cfg.TrustRoot
	if root == "" && !d.cfg.IsNotFC {
		root = "/"
	}
	if root != "" {
		d.orch.ca = &cabundle.Installer{
			Bundle: filepath.Join(root, cabundle.DefaultBundle),
			Copy:   filepath.Join(root, cabundle.DefaultCopy),
			Log:    d.log,
		}
		d.initAPI.InstallCABundle = d.orch.ca.Install
	}
}
