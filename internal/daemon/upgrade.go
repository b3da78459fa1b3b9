package daemon

import (
	"context"
	"os"
	"path/filepath"

	"github.com/envd-dev/envd/internal/fsapi"
	"github.com/envd-dev/envd/internal/httpapi"
	"github.com/envd-dev/envd/internal/upgrade"
)

// upgradeParts is the live upgrade (§18.1): the outgoing handover behind
// POST /upgrade, and the lifecycle that gates and thaws after an incoming one.
type upgradeParts struct {
	life     *upgrade.Lifecycle
	upgrader *upgrade.Upgrader
}

// setupUpgrade wires the upgrade to the process table, the polling
// watchers and the freezer; started with -resume-handover, it takes over
// from the blob right away, before the reaper runs or anything forks.
func (d *Daemon) setupUpgrade() {
	var fr upgrade.Freezer
	if d.vm.cgroups.Enabled() {
		fr = d.orch.freezer
	}
	blob := filepath.Join(d.cfg.RunDir, upgrade.BlobName)
	d.upg.life = &upgrade.Lifecycle{Freezer: fr, Log: d.log}
	// A thaw by /unfreeze or the /init thaw ends the lifetimes held while frozen.
	d.orch.freezer.OnThaw(d.upg.life.Thawed)
	d.upg.upgrader = &upgrade.Upgrader{
		Version:  d.build.Version,
		BlobPath: blob,
		Procs:    d.procs,
		Watchers: watchers{d.fs},
		Freezer:  fr,
		Mounts:   d.orch.volumes,
		Argv:     os.Args,
		Log:      d.log,
	}
	prev := d.initAPI.AfterInit
	d.initAPI.AfterInit = func(ctx context.Context) {
		if prev != nil {
			prev(ctx)
		}
		d.upg.life.Initialized()
	}
	if d.cfg.ResumeHandover {
		r := upgrade.Restorer{
			BlobPath: blob,
			Procs:    d.procs,
			Watchers: watchers{d.fs},
			Freezer:  fr,
			Mounts:   d.orch.volumes,
			FDDir:    filepath.Join(d.cfg.ProcRoot, "self/fd"),
			Log:      d.log,
		}
		rep, adopted, thawNow := r.Restore()
		d.upg.life.Resumed(rep, adopted, thawNow, upgrade.FallbackThaw)
	}
}

func (d *Daemon) upgradeAPI() *httpapi.Upgrade {
	return &httpapi.Upgrade{
		Life:      d.upg.life,
		Upgrader:  d.upg.upgrader,
		StagePath: upgrade.StagePath,
		SelfExe:   filepath.Join(d.cfg.ProcRoot, "self/exe"),
		Log:       d.log,
	}
}

// watchers adapts the Filesystem service's polling watchers.
type watchers struct{ s *fsapi.Service }

func (w watchers) Freeze() ([]upgrade.Watcher, func()) {
	states, release := w.s.FreezeWatchers()
	out := make([]upgrade.Watcher, len(states))
	for i, st := range states {
		out[i] = upgrade.Watcher{ID: st.ID, Path: st.Path, Recursive: st.Recursive, IncludeEntry: st.IncludeEntry, Pending: st.Pending}
	}
	return out, release
}

func (w watchers) Restore(st upgrade.Watcher) error {
	return w.s.RestoreWatcher(fsapi.WatcherState{ID: st.ID, Path: st.Path, Recursive: st.Recursive, IncludeEntry: st.IncludeEntry, Pending: st.Pending})
}
