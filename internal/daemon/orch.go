package daemon

import (
	"path/filepath"
	"strings"

	"github.com/envd-dev/envd/internal/cabundle"
	"github.com/envd-dev/envd/internal/cgroup"
	"github.com/envd-dev/envd/internal/freeze"
	"github.com/envd-dev/envd/internal/fsfreeze"
	"github.com/envd-dev/envd/internal/httpapi"
	"github.com/envd-dev/envd/internal/memcollapse"
	"github.com/envd-dev/envd/internal/volumes"
)

// orch holds what the E2B orchestrator drives: the pause quiescing of
// §18.2–18.4 (a live upgrade uses the same freezer), and what /init sets up
// (§18.6): the NFS volumes with their lifecycle ledger and the CA bundle in
// the trust store, both of which outlive a live upgrade through the handover.
type orch struct {
	freezer  *freeze.Freezer
	fs       *fsfreeze.FS
	collapse *memcollapse.Collapser
	volumes  *volumes.Mounter
	ca       *cabundle.Installer // nil: no trust store is ours (--isnotfc)
}

// setupOrch builds the §18 parts; it needs the cgroups of setupVM.
func (d *Daemon) setupOrch() {
	root := d.vm.cgroups.Root()
	var self string
	if root != "" {
		s, err := cgroup.SelfDir(d.cfg.ProcRoot)
		switch {
		case err != nil:
			d.log.Warn("locate envd's own cgroup; hierarchy freezes will run legacy", "err", err)
		case d.cfg.IsNotFC && !strings.HasPrefix(s, root+string(filepath.Separator)):
			// Outside a VM a hierarchy sweep from a cgroup envd is not
			// inside would freeze the machine's own services.
			d.log.Info("envd runs outside its cgroup root; hierarchy freezes will run legacy", "self", s, "root", root)
		default:
			self = s
		}
	}
	d.orch.freezer = freeze.New(freeze.Config{Root: root, Self: self, Log: d.log})
	// FIFREEZE of / on a machine that is not a sandbox VM would stop it:
	// the target comes from the flags alone (config.FreezeRoot).
	d.orch.fs = fsfreeze.New(d.cfg.FreezeRoot)
	d.orch.collapse = &memcollapse.Collapser{ProcSelf: filepath.Join(d.cfg.ProcRoot, "self")}
	d.initAPI.OnAuthorized = httpapi.InitThaw(d.orch.freezer, d.log)
}

// Freezer is the workload freezer, for tests and the live upgrade.
func (d *Daemon) Freezer() *freeze.Freezer { return d.orch.freezer }
