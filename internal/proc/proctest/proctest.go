// Package proctest gives tests a real proc.Manager: a running reaper, an
// environment with this process's PATH and a manual clock, all stopped when
// the test ends. It serves the tests of proc and of the API packages over it,
// which would otherwise each build the same thing.
package proctest

import (
	"context"
	"log/slog"
	"os"
	"syscall"
	"testing"

	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/proc"
	"github.com/envd-dev/envd/internal/reaper"
	"github.com/envd-dev/envd/internal/testkit"
)

// Fixture is what New started.
type Fixture struct {
	Manager *proc.Manager
	Env     *execenv.Env
	Clock   *testkit.Clock
}

// New starts a reaper and a Manager over it; mutate adjusts the Options
// before the Manager is made. When the test ends every live process is
// killed and waited for, then the reaper stops. Cleanups the caller
// registers afterwards (an HTTP server in front, say) run before that.
func New(t testing.TB, mutate ...func(*proc.Options)) *Fixture {
	t.Helper()
	r, err := reaper.New(slog.New(slog.DiscardHandler), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reaped := make(chan struct{})
	go func() { r.Run(ctx); close(reaped) }()
	env := execenv.NewEnv(os.Getenv("PATH"))
	c := testkit.NewClock()
	o := proc.Options{Reaper: r, Env: env, Now: c.Now}
	for _, fn := range mutate {
		fn(&o)
	}
	m := proc.NewManager(o)
	t.Cleanup(func() {
		for _, p := range m.Live() {
			_ = p.Signal(syscall.SIGKILL)
			<-p.Done()
		}
		cancel()
		<-reaped
	})
	return &Fixture{Manager: m, Env: env, Clock: c}
}
