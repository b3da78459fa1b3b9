package fswatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/testkit"
)

// collect reads events until pred says stop or the watch ends.
func collect(t *testing.T, w *Watcher, stop func([]Event) bool) []Event {
	t.Helper()
	var got []Event
	for ev := range w.Events() {
		got = append(got, ev)
		if stop(got) {
			return got
		}
	}
	t.Fatalf("watch ended early (err %v) after %d events: %v", w.Err(), len(got), tail(got))
	return nil
}

func tail(evs []Event) []Event {
	if len(evs) > 20 {
		return evs[len(evs)-20:]
	}
	return evs
}

func has(evs []Event, name string, op Op) bool {
	for _, e := range evs {
		if e.Name == name && e.Op == op {
			return true
		}
	}
	return false
}

func start(t *testing.T, dir string, opt Options) (*Watcher, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := Start(ctx, dir, opt)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		for range w.Events() {
		}
	})
	return w, cancel
}

func TestOpsOrder(t *testing.T) {
	all := uint32(unix.IN_DELETE | unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_MOVED_FROM | unix.IN_CREATE)
	got := fmt.Sprint(ops(all))
	if want := "[CREATE RENAME CHMOD WRITE REMOVE]"; got != want {
		t.Fatalf("ops = %s, want %s", got, want)
	}
	if got := fmt.Sprint(ops(unix.IN_MOVED_TO | unix.IN_DELETE_SELF)); got != "[CREATE REMOVE]" {
		t.Fatalf("ops = %s", got)
	}
	if got := fmt.Sprint(ops(unix.IN_MOVE_SELF)); got != "[RENAME]" {
		t.Fatalf("ops = %s", got)
	}
}

func TestStartValidates(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(t.Context(), file, Options{}); !errors.Is(err, ErrNotDir) {
		t.Fatalf("file: err %v, want ErrNotDir", err)
	}
	if _, err := Start(t.Context(), filepath.Join(dir, "missing"), Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: err %v, want ErrNotExist", err)
	}
}

// The basic event kinds, named relative to the root, in the order they happened.
func TestEventKinds(t *testing.T) {
	dir := t.TempDir()
	w, _ := start(t, dir, Options{})
	f := filepath.Join(dir, "a.txt")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f, filepath.Join(dir, "b.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "b.txt")); err != nil {
		t.Fatal(err)
	}
	got := collect(t, w, func(evs []Event) bool { return has(evs, "b.txt", Remove) })
	want := []Event{{"a.txt", Create}, {"a.txt", Write}, {"a.txt", Chmod}, {"a.txt", Rename}, {"b.txt", Create}, {"b.txt", Remove}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// Non-recursive watches see a new subdirectory but nothing inside it.
func TestNotRecursive(t *testing.T) {
	dir := t.TempDir()
	w, _ := start(t, dir, Options{})
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "inner"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got := collect(t, w, func(evs []Event) bool { return has(evs, "marker", Create) })
	if has(got, "sub/inner", Create) {
		t.Fatalf("non-recursive watch reported a nested file: %v", got)
	}
	if !has(got, "sub", Create) {
		t.Fatalf("missing CREATE sub: %v", got)
	}
}

// Completeness: 1,000 files as fast as possible, spread over directories
// created after the watch started (nested two deep), each written after
// creation. Every file's CREATE arrives exactly once and before its WRITE.
func TestRecursiveCompleteness(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "pre"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, _ := start(t, dir, Options{Recursive: true, Buffer: 4096})

	const files = 1000
	var names []string
	for i := range files {
		var rel string
		switch i % 4 {
		case 0:
			rel = "top" + strconv.Itoa(i)
		case 1:
			rel = filepath.Join("pre", "f"+strconv.Itoa(i))
		default:
			d := filepath.Join("new"+strconv.Itoa(i%10), "deep")
			if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
			rel = filepath.Join(d, "f"+strconv.Itoa(i))
		}
		if err := os.WriteFile(filepath.Join(dir, rel), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, rel)
	}
	if err := os.WriteFile(filepath.Join(dir, "zz-done"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got := collect(t, w, func(evs []Event) bool { return evs[len(evs)-1] == Event{"zz-done", Create} })

	creates := map[string]int{}
	firstWrite := map[string]int{}
	createAt := map[string]int{}
	for i, e := range got {
		switch e.Op {
		case Create:
			creates[e.Name]++
			createAt[e.Name] = i
		case Write:
			if _, ok := firstWrite[e.Name]; !ok {
				firstWrite[e.Name] = i
			}
		}
	}
	for _, n := range names {
		if creates[n] != 1 {
			t.Errorf("%s: %d CREATE events, want 1", n, creates[n])
			continue
		}
		if wi, ok := firstWrite[n]; ok && wi < createAt[n] {
			t.Errorf("%s: WRITE at %d before CREATE at %d", n, wi, createAt[n])
		}
	}
	// i%4 in {2,3} hits every i%10, so new0..new9 and their deep/ all exist.
	for i := range 10 {
		for _, d := range []string{"new" + strconv.Itoa(i), filepath.Join("new"+strconv.Itoa(i), "deep")} {
			if creates[d] != 1 {
				t.Errorf("new directory %s: %d CREATE events, want 1", d, creates[d])
			}
		}
	}
}

// A subtree moved into a recursive watch is watched too, and a subtree moved
// out stops producing events under its old name.
func TestRecursiveMoves(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	if err := os.MkdirAll(filepath.Join(outside, "tree", "leaf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "tree", "leaf", "old"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	w, _ := start(t, dir, Options{Recursive: true})
	if err := os.Rename(filepath.Join(outside, "tree"), filepath.Join(dir, "tree")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tree", "leaf", "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "marker1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got := collect(t, w, func(evs []Event) bool { return has(evs, "marker1", Create) })
	for _, want := range []Event{{"tree", Create}, {"tree/leaf", Create}, {"tree/leaf/old", Create}, {"tree/leaf/new", Create}} {
		if !has(got, want.Name, want.Op) {
			t.Errorf("missing %v in %v", want, got)
		}
	}

	if err := os.Rename(filepath.Join(dir, "tree"), filepath.Join(outside, "gone")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "gone", "leaf", "after"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "marker2"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got = collect(t, w, func(evs []Event) bool { return has(evs, "marker2", Create) })
	if !has(got, "tree", Rename) {
		t.Errorf("missing RENAME tree in %v", got)
	}
	for _, e := range got {
		if strings.Contains(e.Name, "after") {
			t.Errorf("event from a subtree moved out of the watch: %v", e)
		}
	}
}

// Removing the watched directory ends the watch with ErrRootGone after REMOVE ".".
func TestRootRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "w")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w, _ := start(t, dir, Options{})
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	var got []Event
	for ev := range w.Events() {
		got = append(got, ev)
	}
	if !errors.Is(w.Err(), ErrRootGone) {
		t.Fatalf("err %v, want ErrRootGone", w.Err())
	}
	if !has(got, ".", Remove) {
		t.Fatalf("missing REMOVE . in %v", got)
	}
}

// Cancelling the context ends the watch without error.
func TestCancel(t *testing.T) {
	w, cancel := start(t, t.TempDir(), Options{Recursive: true})
	cancel()
	for range w.Events() {
	}
	if w.Err() != nil {
		t.Fatalf("err %v after cancel, want nil", w.Err())
	}
}

// A reader that stops consuming lets the kernel queue fill; the watch must
// then end with ErrOverflow rather than drop events quietly. The queue size is
// the machine's own max_queued_events; nothing global is changed.
func TestOverflowWhenNotRead(t *testing.T) {
	limit := testkit.MaxQueuedEvents(t, 100000)
	dir := t.TempDir()
	const buffer = 16
	w, _ := start(t, dir, Options{Buffer: buffer})
	// Alternating chmods of two files: one CHMOD each, never coalesced
	// (the kernel merges only identical consecutive events). Besides the
	// kernel queue, the watcher holds the channel buffer and one read buffer
	// (64 KiB of 32-byte events for these short names).
	files := [2]string{filepath.Join(dir, "a"), filepath.Join(dir, "b")}
	for _, f := range files {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range limit + buffer + 64*1024/32 + 64 {
		if err := os.Chmod(files[i%2], 0o600|os.FileMode(i%2)); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for range w.Events() {
		n++
	}
	if !errors.Is(w.Err(), ErrOverflow) {
		t.Fatalf("watch ended with %v after %d events, want ErrOverflow", w.Err(), n)
	}
}
