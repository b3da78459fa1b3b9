package keepalive

import (
	"net/http"
	"testing"
	"time"
)

func TestInterval(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"":    Default,
		"50":  50 * time.Second,
		"1":   time.Second,
		"0":   Default,
		"-3":  Default,
		"1.5": Default,
		"abc": Default,
	} {
		h := http.Header{}
		if v != "" {
			h.Set(Header, v)
		}
		if got := Interval(h); got != want {
			t.Errorf("%q: got %v, want %v", v, got, want)
		}
	}
}
