// Package upgrade is envd's live self-upgrade (§18.1): POST /upgrade stages a
// new binary, freezes the workload, makes the descriptors of every running
// process inheritable on fixed slots, writes the handover blob and execs the
// new binary under the same PID with -resume-handover; the new image reads
// the blob back and re-adopts the processes, retained exits, polling
// watchers, the mount ledger and the guest-frozen record, keeping the
// workload frozen until the first /init (or a 60 s fallback) thaws it.
//
// The blob is E2B's upgrade.HandoverState, so envds of either origin can
// hand over to each other; blob.go is the only code that sees its proto.
// What the package needs from the process table, the watchers, the mount
// ledger and the freezer is an interface each, wired by daemon.
package upgrade

import (
	"time"

	"github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/proc"
)

// StagePath is the only target E2B's orchestrator may name in
// X-Envd-Upgrade-Bin, and where the delivered binary is written.
const StagePath = "/usr/bin/envd.next"

// BlobName is the handover blob's path under the run directory (tmpfs in a VM).
const BlobName = "e2b/envd-handover.pb"

// ResumeFlag is appended to the new image's arguments.
const ResumeFlag = "--resume-handover"

// SlotBase is the first descriptor slot: the i-th process's stdout, stderr,
// stdin and pty master go to SlotBase+5i, +1, +2, +3.
const SlotBase = 200

// slotStride leaves one spare slot per process, as E2B's layout does.
const slotStride = 5

// HandoverFreezeWait is how long the outgoing handover waits for the
// workload to settle frozen (E2B's cgroups.HandoverMaxWait).
const HandoverFreezeWait = 2 * time.Second

// FallbackThaw is how long an upgraded envd keeps the workload frozen
// without a successful /init.
const FallbackThaw = 60 * time.Second

// Processes is the process table: it can freeze itself for a snapshot and
// adopt what a previous image left. *proc.Manager implements it.
type Processes interface {
	Freeze() (live []proc.Exported, exits []proc.ExportedExit, dying int, release func())
	Adopt(proc.Adoption) (*proc.Process, error)
	AdoptExit(proc.ExportedExit) error
}

// Watchers is the polling-watcher registry (CreateWatcher).
type Watchers interface {
	// Freeze describes every watcher and blocks the registry until release.
	Freeze() (ws []Watcher, release func())
	Restore(Watcher) error
}

// Mounts is the NFS mount ledger of /init volumeMounts (§18.6): mount
// path → lifecycle id. Only /init changes it; an /init racing the handover
// may mount after the snapshot, and that mount is then remounted by the
// next /init.
type Mounts interface {
	Ledger() map[string]string
	Restore(map[string]string)
}

// Freezer is the workload freezer shared with /freeze and /unfreeze
// (§18.2). Its lock is the single one every freeze and thaw takes.
type Freezer interface {
	Lock()
	Unlock()
	// FreezeLocked freezes the workload the legacy way and waits up to wait
	// for it to settle; it fails unless every cgroup it wrote is frozen.
	FreezeLocked(wait time.Duration) error
	// ThawLocked thaws the workload, leaving the guest's own freezes alone.
	ThawLocked() error
	// GuestFrozen is the record of cgroups the guest froze itself,
	// relative to the cgroup root, sorted.
	GuestFrozen() []string
	// Restore takes over an inherited freeze: the record, and the
	// knowledge that a freeze of ours is in effect.
	Restore(guestFrozen []string)
}

// Watcher is a polling watcher carried across the swap.
type Watcher struct {
	ID           string
	Path         string // resolved
	Recursive    bool
	IncludeEntry bool
	Pending      []*Event
}

// Event is a buffered watcher event, in its wire form: it is carried as is.
type Event = filesystem.FilesystemEvent

// Mount is one entry of the NFS ledger.
type Mount struct {
	Path        string
	LifecycleID string
}
