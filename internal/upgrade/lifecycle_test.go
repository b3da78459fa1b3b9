package upgrade

import (
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/freeze"
)

func frozenCgroups(t *testing.T) (*freeze.Freezer, string) {
	t.Helper()
	root := testCgroups(t, "user", "ptys")
	fr := freeze.New(freeze.Config{Root: root})
	fr.Lock()
	err := fr.FreezeLocked(10 * time.Second)
	fr.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return fr, root
}

// Without an /init the fallback thaws; the gate stays closed regardless.
func TestLifecycleFallbackThaw(t *testing.T) {
	fr, root := frozenCgroups(t)
	fr.Restore(nil)
	l := &Lifecycle{Freezer: fr}
	l.Resumed(Report{Procs: 1}, nil, false, time.Millisecond)
	deadline := time.Now().Add(30 * time.Second)
	for freezeOf(t, root, "user")+freezeOf(t, root, "ptys") != "00" {
		if time.Now().After(deadline) {
			t.Fatal("fallback never thawed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !l.Gated() || l.IsInitialized() {
		t.Fatal("the fallback opened the gate")
	}
	l.Initialized()
	if l.Gated() || !l.IsInitialized() {
		t.Fatal("/init did not open the gate")
	}
}

// The first /init thaws, opens the gate and only then starts the carried
// lifetimes; the report is the header's exact JSON.
func TestLifecycleInitThawsAndStartsLifetimes(t *testing.T) {
	fr, root := frozenCgroups(t)
	fr.Restore([]string{"guest/own"})
	m := testManager(t)
	p := startSleep(t, m, false)
	l := &Lifecycle{Freezer: fr}
	if _, ok := l.HandoverHeader(); ok {
		t.Fatal("X-Envd-Handover before any handover")
	}
	l.Resumed(Report{Procs: 2, ProcsFailed: 1, Retained: 3, WatchersFailed: 4}, []Adopted{{Proc: p, Timeout: time.Millisecond}}, false, time.Hour)
	if !l.Gated() || freezeOf(t, root, "user") != "1" {
		t.Fatal("not gated and frozen after Resumed")
	}
	h, ok := l.HandoverHeader()
	if want := `{"failed":false,"procs":2,"procs_failed":1,"retained":3,"retained_failed":0,"watchers":0,"watchers_failed":4}`; !ok || h != want {
		t.Fatalf("X-Envd-Handover %s, want %s", h, want)
	}
	l.Initialized()
	if l.Gated() || freezeOf(t, root, "user")+freezeOf(t, root, "ptys") != "00" {
		t.Fatal("first /init did not open the gate and thaw")
	}
	if got := fr.GuestFrozen(); len(got) != 1 || got[0] != "guest/own" {
		t.Fatalf("guest-frozen record %v", got)
	}
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("carried lifetime never killed the process")
	}
	if r := p.Result(); r.Status != "signal: killed" || r.ExitCode != -1 {
		t.Fatalf("killed by its lifetime: %+v", r)
	}
}
