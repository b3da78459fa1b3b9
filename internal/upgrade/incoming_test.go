package upgrade

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/envd-dev/envd/internal/proc"
)

// What cannot be restored is counted, not hidden: a process whose
// descriptors are gone, a retained exit whose pid runs again, watchers with
// nowhere to go. The rest is restored and the blob deleted.
func TestRestoreCountsFailures(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starts processes as root")
	}
	m := testManager(t)
	live := startSleep(t, m, false)
	end := proc.Result{ExitCode: 1, Exited: true, Status: "exit status 1", Err: "exit status 1"}
	b, err := Encode(State{
		FromVer: "0.6.13",
		Procs: []Proc{{Pid: 999999, Config: proc.Config{Cmd: "x"},
			Stdout: SlotBase + 50, Stderr: SlotBase + 51, Stdin: -1, TTY: -1}}, // never opened
		Exits: []Exit{
			{Pid: 4242424, Tag: "gone", HasTag: true, Result: end, RemainingMS: 10000},
			{Pid: live.Pid(), Result: end, RemainingMS: 10000}, // the pid runs again
		},
		Watchers: []Watcher{{ID: "w1", Path: "/"}},
		Mounts:   []Mount{{"/mnt/v", "L"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(t.TempDir(), BlobName)
	if err := writeBlob(blob, b); err != nil {
		t.Fatal(err)
	}
	l := ledger{}
	r := &Restorer{BlobPath: blob, Procs: m, Mounts: l}
	rep, adopted, thaw := r.Restore()
	if want := (Report{Procs: 1, ProcsFailed: 1, Retained: 2, RetainedFailed: 1, Watchers: 1, WatchersFailed: 1}); rep != want || len(adopted) != 0 {
		t.Fatalf("report %+v (adopted %d), want %+v", rep, len(adopted), want)
	}
	if !thaw {
		t.Fatal("no freezer, yet the workload is to stay frozen")
	}
	if p, err := m.GetRetained(proc.Selector{Tag: "gone", ByTag: true}); err != nil || p.Result() != end {
		t.Fatalf("retained exit: %v %v", p, err)
	}
	if l["/mnt/v"] != "L" {
		t.Fatalf("ledger %v", l)
	}
	if _, err := os.Stat(blob); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("blob not deleted: %v", err)
	}
}

func TestRestoreUnreadableBlob(t *testing.T) {
	blob := filepath.Join(t.TempDir(), BlobName)
	if err := writeBlob(blob, []byte{0x0a, 0xff}); err != nil {
		t.Fatal(err)
	}
	rep, adopted, thaw := (&Restorer{BlobPath: blob, Procs: testManager(t)}).Restore()
	if rep != (Report{Failed: true}) || adopted != nil || !thaw {
		t.Fatalf("garbage blob: %+v %v %v", rep, adopted, thaw)
	}
}
