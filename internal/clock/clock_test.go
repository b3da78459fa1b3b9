package clock

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSetPassesRealtimeAndNanoseconds(t *testing.T) {
	var gotID int32
	var gotTS unix.Timespec
	r := Realtime{Settime: func(id int32, ts *unix.Timespec) error {
		gotID, gotTS = id, *ts
		return nil
	}}
	want := time.Date(2026, 11, 28, 21, 0, 0, 123456789, time.UTC)
	if err := r.Set(want); err != nil {
		t.Fatal(err)
	}
	if gotID != unix.CLOCK_REALTIME {
		t.Errorf("clock id %d, want CLOCK_REALTIME", gotID)
	}
	if got := time.Unix(gotTS.Unix()); !got.Equal(want) {
		t.Errorf("set %v, want %v", got, want)
	}
	r.Settime = func(int32, *unix.Timespec) error { return unix.EPERM }
	if err := r.Set(want); !errors.Is(err, unix.EPERM) {
		t.Errorf("Set = %v, want EPERM wrapped", err)
	}
}

// TestKernelRejectsBadClock reaches the real syscall without moving the real
// clock: CLOCK_MONOTONIC cannot be set, so the kernel answers EINVAL.
func TestKernelRejectsBadClock(t *testing.T) {
	r := Realtime{Settime: func(_ int32, ts *unix.Timespec) error {
		return unix.ClockSettime(unix.CLOCK_MONOTONIC, ts)
	}}
	if err := r.Set(time.Now()); !errors.Is(err, unix.EINVAL) {
		t.Errorf("setting CLOCK_MONOTONIC = %v, want EINVAL", err)
	}
}
