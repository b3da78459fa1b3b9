package memcollapse

import (
	"context"
	"errors"
	"testing"
)

func TestAnonRegions(t *testing.T) {
	maps := "00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/envd\n" +
		"00651000-00652000 rw-p 00051000 08:02 173521 /usr/bin/envd\n" +
		"00652000-00655000 rw-p 00000000 00:00 0 [heap]\n" +
		"c000000000-c004000000 rw-p 00000000 00:00 0 \n" +
		"7f0000000000-7f0000400000 rw-p 00000000 00:00 0\n" +
		"7f0000400000-7f0000600000 ---p 00000000 00:00 0\n" +
		"7f0000600000-7f0000800000 r--p 00000000 00:00 0\n" +
		"7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n"
	got, err := anonRegions([]byte(maps))
	if err != nil {
		t.Fatal(err)
	}
	want := []region{{0xc000000000, 0xc004000000}, {0x7f0000000000, 0x7f0000400000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("anonRegions = %x, want %x", got, want)
	}
	if _, err := anonRegions([]byte("zz-1 rw-p 0 00:00 0\n")); err == nil {
		t.Error("bad range accepted")
	}
}

func TestCollapseOwnHeap(t *testing.T) {
	// Touch 16 MiB so there are whole, populated 2 MiB windows.
	keep := make([]byte, 16<<20)
	for i := range len(keep) / 4096 {
		keep[i*4096] = 1
	}
	c := &Collapser{ProcSelf: "/proc/self"}
	for round := range 2 {
		res, err := c.Collapse(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res.Regions == 0 || res.Chunks == 0 {
			t.Fatalf("round %d: nothing scanned: %+v", round, res)
		}
		if res.Chunks != res.Collapsed+res.AlreadyHuge+res.Skipped {
			t.Errorf("round %d: chunks %d != collapsed+alreadyHuge+skipped in %+v", round, res.Chunks, res)
		}
		t.Logf("round %d: %+v", round, res)
	}
	_ = keep[len(keep)-1]
}

func TestCollapseCancelledMidRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	c := &Collapser{ProcSelf: "/proc/self", beforeChunk: func() {
		if n++; n == 2 {
			cancel()
		}
	}}
	res, err := c.Collapse(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if res.Chunks != 1 {
		t.Errorf("chunks tried = %d, want 1 (stop at the first window after the cancel)", res.Chunks)
	}
}

func TestUnreadableProc(t *testing.T) {
	c := &Collapser{ProcSelf: t.TempDir()}
	if _, err := c.Collapse(context.Background()); err == nil {
		t.Error("collapse without a maps file succeeded")
	}
}
