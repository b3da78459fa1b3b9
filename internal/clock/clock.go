// Package clock sets the guest's wall clock from /init's timestamp (§7.4):
// after a snapshot restore the guest clock is as old as the snapshot. The
// decision when to set lives in httpapi.ClockNeedsSet; this package only
// performs it, behind a field so tests never move the real clock.
package clock

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Realtime sets CLOCK_REALTIME.
type Realtime struct {
	// Settime is unix.ClockSettime when nil.
	Settime func(clockid int32, ts *unix.Timespec) error
}

// Set moves the wall clock to t.
func (r Realtime) Set(t time.Time) error {
	set := r.Settime
	if set == nil {
		set = unix.ClockSettime
	}
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := set(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("set realtime clock: %w", err)
	}
	return nil
}
