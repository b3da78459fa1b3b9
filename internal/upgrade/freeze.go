package upgrade

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CgroupFreezer is a minimal legacy freezer (§18.2): cgroup.freeze of the
// static workload groups, polled through cgroup.events. It stands in for
// the workload freezer of /freeze until that one is wired; it keeps no
// guest-frozen record of its own, but carries one across an upgrade.
type CgroupFreezer struct {
	Root   string   // cgroup root
	Groups []string // relative to Root: "user", "ptys"

	mu     sync.Mutex
	guest  []string
	active bool
}

// Lock takes the freezer's lock.
func (c *CgroupFreezer) Lock() { c.mu.Lock() }

// Unlock releases it.
func (c *CgroupFreezer) Unlock() { c.mu.Unlock() }

// FreezeLocked writes 1 to each group and waits until all read frozen.
func (c *CgroupFreezer) FreezeLocked(wait time.Duration) error {
	var errs []error
	var written []string
	for _, g := range c.Groups {
		if err := os.WriteFile(filepath.Join(c.Root, g, "cgroup.freeze"), []byte("1"), 0); err != nil {
			errs = append(errs, fmt.Errorf("freeze %s: %w", g, err))
			continue
		}
		written = append(written, g)
	}
	c.active = c.active || len(written) > 0
	deadline := time.Now().Add(wait)
	for {
		pending := 0
		for _, g := range written {
			if frozen, err := c.frozen(g); err != nil || !frozen {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("%d of %d cgroups not frozen after %v", pending, len(written), wait))
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	return errors.Join(errs...)
}

func (c *CgroupFreezer) frozen(g string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(c.Root, g, "cgroup.events"))
	if err != nil {
		return false, err
	}
	return bytes.Contains(b, []byte("\nfrozen 1")) || bytes.HasPrefix(b, []byte("frozen 1")), nil
}

// ThawLocked writes 0 to each group.
func (c *CgroupFreezer) ThawLocked() error {
	var errs []error
	for _, g := range c.Groups {
		if err := os.WriteFile(filepath.Join(c.Root, g, "cgroup.freeze"), []byte("0"), 0); err != nil {
			errs = append(errs, fmt.Errorf("thaw %s: %w", g, err))
		}
	}
	if len(errs) == 0 {
		c.active = false
	}
	return errors.Join(errs...)
}

// GuestFrozen returns the carried record.
func (c *CgroupFreezer) GuestFrozen() []string { return c.guest }

// Restore takes over the record and the freeze of the previous image.
func (c *CgroupFreezer) Restore(guest []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.guest, c.active = guest, true
}
