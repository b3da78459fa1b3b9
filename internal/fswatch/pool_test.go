package fswatch

import (
	"os"
	"path/filepath"
	"testing"
)

func idle(p *Pool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// A watch that ended hands its instance back; the next watch that takes it
// sees only its own directory, never the first one's, whose subdirectories
// included, even though events for those were queued when it ended.
func TestPoolReusesInstanceWithoutOldEvents(t *testing.T) {
	var pool Pool
	defer pool.Close()
	a, b := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(a, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	w1, cancel1 := start(t, a, Options{Recursive: true, Pool: &pool})
	if err := os.WriteFile(filepath.Join(a, "first"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	collect(t, w1, func(evs []Event) bool { return has(evs, "first", Create) })
	// Queued but never read by w1.
	for _, p := range []string{"a-late", "sub/a-late"} {
		if err := os.WriteFile(filepath.Join(a, p), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cancel1()
	for range w1.Events() {
	}
	if w1.Err() != nil {
		t.Fatalf("first watch ended with %v", w1.Err())
	}
	if n := idle(&pool); n != 1 {
		t.Fatalf("pool holds %d instances after the watch ended, want 1", n)
	}

	w2, _ := start(t, b, Options{Pool: &pool})
	if n := idle(&pool); n != 0 {
		t.Fatalf("pool holds %d instances after a watch took one, want 0", n)
	}
	// Changes in a, the old watch's tree, come first; b's last.
	for _, p := range []string{filepath.Join(a, "a-after"), filepath.Join(a, "sub", "a-after"), filepath.Join(b, "mine")} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := collect(t, w2, func(evs []Event) bool { return has(evs, "mine", Write) })
	for _, e := range got {
		if e.Name != "mine" {
			t.Errorf("second watch reported %v, which is not in its directory", e)
		}
	}
}

// A watch that failed closes its instance instead of pooling it, and so does
// a closed pool.
func TestPoolKeepsOnlyCleanInstances(t *testing.T) {
	var pool Pool
	dir := filepath.Join(t.TempDir(), "gone")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w, _ := start(t, dir, Options{Pool: &pool})
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	for range w.Events() {
	}
	if w.Err() == nil {
		t.Fatal("watch of a removed directory ended without an error")
	}
	if n := idle(&pool); n != 0 {
		t.Fatalf("pool kept the instance of a failed watch (%d idle)", n)
	}

	pool.Close()
	w2, cancel := start(t, t.TempDir(), Options{Pool: &pool})
	cancel()
	for range w2.Events() {
	}
	if n := idle(&pool); n != 0 {
		t.Fatalf("closed pool kept %d instances", n)
	}
}
