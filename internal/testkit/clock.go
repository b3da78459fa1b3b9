package testkit

import (
	"sync"
	"time"
)

// Clock is a manual clock for components that take a Now func (exit
// retention, for one), so tests move time instead of sleeping.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts at a fixed instant, so results never depend on the real date.
func NewClock() *Clock { return &Clock{t: time.Unix(1_000_000, 0)} }

// Now is the func to inject.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock forward by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
