package upgrade

import (
	"encoding/json"
	"log/slog"
	"sync"
	"syscall"
	"time"
)

// Lifecycle is what the rest of envd must know about upgrades: whether a
// successful /init has happened (an /upgrade before it is refused), and,
// after a handover boot, the pre-init gate, the handover report for
// /init's X-Envd-Handover header, and the thaw that releases the workload.
type Lifecycle struct {
	Freezer Freezer // nil: cgroups are off
	Log     *slog.Logger

	mu          sync.Mutex
	initialized bool
	resumed     bool // started with -resume-handover
	report      Report
	frozen      bool // the handover's freeze is still in effect
	adopted     []Adopted
	fallback    *time.Timer
}

// Resumed records a handover boot: the gate closes until the first
// successful /init, and the workload stays frozen until then, or until
// fallback passes, unless thawNow.
func (l *Lifecycle) Resumed(rep Report, adopted []Adopted, thawNow bool, fallback time.Duration) {
	l.mu.Lock()
	l.resumed, l.report, l.adopted, l.frozen = true, rep, adopted, true
	l.mu.Unlock()
	if thawNow {
		l.thaw("handover without a freeze to keep")
		return
	}
	l.mu.Lock()
	l.fallback = time.AfterFunc(fallback, func() { l.thaw("no /init within the fallback after the upgrade") })
	l.mu.Unlock()
}

// Initialized marks a successful, authorised /init: the gate opens, and a
// handover's freeze is lifted.
func (l *Lifecycle) Initialized() {
	l.mu.Lock()
	l.initialized = true
	if l.fallback != nil {
		l.fallback.Stop()
	}
	l.mu.Unlock()
	l.thaw("first /init after the upgrade")
}

// IsInitialized reports whether a successful /init has happened.
func (l *Lifecycle) IsInitialized() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.initialized
}

// Gated reports whether requests other than GET /health and POST /init
// must be refused: a handover boot before its first /init (§6.1).
func (l *Lifecycle) Gated() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.resumed && !l.initialized
}

// HandoverHeader is the X-Envd-Handover value, or ok=false on an envd that
// was not started by a handover.
func (l *Lifecycle) HandoverHeader() (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.resumed {
		return "", false
	}
	b, _ := json.Marshal(l.report) // a struct of ints and a bool
	return string(b), true
}

// thaw ends the handover's freeze once, then starts the carried lifetimes.
func (l *Lifecycle) thaw(why string) {
	l.mu.Lock()
	frozen := l.frozen
	l.frozen = false
	l.mu.Unlock()
	if !frozen {
		return
	}
	if l.Freezer != nil {
		l.Freezer.Lock()
		err := l.Freezer.ThawLocked()
		l.Freezer.Unlock()
		if err != nil {
			l.log().Warn("thaw after upgrade", "err", err)
		}
	}
	l.log().Info("workload thawed after upgrade", "why", why)
	l.Thawed()
}

// Thawed starts the lifetimes carried by re-adopted processes, once: they
// count from the first thaw after the upgrade, as the workload could not
// run before. Every thaw of the workload (/unfreeze, /init, the watchdog)
// should call it.
func (l *Lifecycle) Thawed() {
	l.mu.Lock()
	adopted := l.adopted
	l.adopted = nil
	l.mu.Unlock()
	for _, a := range adopted {
		if a.Timeout <= 0 {
			continue
		}
		p := a.Proc
		t := time.AfterFunc(a.Timeout, func() { _ = p.Signal(syscall.SIGKILL) })
		go func() { <-p.Done(); t.Stop() }()
	}
}

func (l *Lifecycle) log() *slog.Logger {
	if l.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Log
}
