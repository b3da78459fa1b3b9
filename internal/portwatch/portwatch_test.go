package portwatch

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/portscan"
)

// fakeTable is a socket table a test edits; the real scanner is exercised
// through the wire in envdapi.
type fakeTable struct {
	mu sync.Mutex
	ls []portscan.Listener
}

func (f *fakeTable) set(ls ...portscan.Listener) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ls = ls
}

func (f *fakeTable) scan() ([]portscan.Listener, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]portscan.Listener(nil), f.ls...), nil
}

var (
	lo   = portscan.Listener{Addr: netip.MustParseAddr("127.0.0.1"), Port: 3000}
	any6 = portscan.Listener{Addr: netip.MustParseAddr("::"), Port: 8080, V6: true}
)

func next(t *testing.T, s *Sub) Event {
	t.Helper()
	select {
	case e := <-s.C:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no event")
		return Event{}
	}
}

func TestSnapshotThenOpenAndClose(t *testing.T) {
	tab := &fakeTable{}
	tab.set(lo)
	w := &Watcher{Scan: tab.scan, Interval: time.Millisecond, Forwarded: func() []uint16 { return []uint16{3000, 8080} }}
	snap, sub, err := w.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if len(snap) != 1 || snap[0].Port != 3000 || snap[0].State != Open || !snap[0].Forwarded {
		t.Fatalf("snapshot %+v", snap)
	}
	tab.set(lo, any6, any6) // the same port twice (SO_REUSEPORT) is one event
	if e := next(t, sub); e.State != Open || e.Port != 8080 || !e.V6 || e.Forwarded {
		t.Fatalf("open %+v (a wildcard listener is never forwarded)", e)
	}
	tab.set(any6)
	if e := next(t, sub); e.State != Closed || e.Port != 3000 {
		t.Fatalf("close %+v", e)
	}
	select {
	case e := <-sub.C:
		t.Fatalf("extra event %+v", e)
	default:
	}
}

// A subscriber that stops reading is ended with ErrOverflow, not fed
// events with holes.
func TestOverflowEndsSubscription(t *testing.T) {
	tab := &fakeTable{}
	w := &Watcher{Scan: tab.scan, Interval: time.Hour}
	_, sub, err := w.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	for i := range subQueue + 1 {
		l := lo
		l.Port = uint16(1000 + i)
		tab.set(l)
		if err := w.scanLocked(); err != nil {
			t.Fatal(err)
		}
	}
	w.mu.Unlock()
	<-sub.Done()
	if !errors.Is(sub.Err(), ErrOverflow) || w.Subscribers() != 0 {
		t.Fatalf("err %v, %d subscribers", sub.Err(), w.Subscribers())
	}
}

func TestScanErrorFailsSubscribe(t *testing.T) {
	boom := errors.New("boom")
	w := &Watcher{Scan: func() ([]portscan.Listener, error) { return nil, boom }}
	if _, _, err := w.Subscribe(); !errors.Is(err, boom) || w.Subscribers() != 0 {
		t.Fatalf("%v", err)
	}
}
