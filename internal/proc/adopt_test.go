package proc_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/proc"
)

// forkUnmanaged starts sh -c script as a child of this process the way a
// previous image of envd left it: not registered with the reaper, its
// pipes' far ends held only by us.
func forkUnmanaged(t *testing.T, script string) (pid int, stdin, stdout, stderr *os.File) {
	t.Helper()
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", script}, &syscall.ProcAttr{
		Files: []uintptr{inR.Fd(), outW.Fd(), errW.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		t.Fatal(err)
	}
	return pid, inW, outR, errR
}

// An adopted child is supervised like a started one: output to
// subscribers, stdin, and the §8.1 end event of its real wait status.
func TestAdoptPipeProcess(t *testing.T) {
	f := newFixture(t)
	pid, in, out, errf := forkUnmanaged(t, "read l; echo out:$l; echo err:$l >&2; exit 4")
	cwd := "/"
	p, err := f.m.Adopt(proc.Adoption{Pid: pid, Tag: "adopted", HasTag: true,
		Config: proc.Config{Cmd: "/bin/sh", Args: []string{"-c", "..."}, Cwd: &cwd}, Stdout: out, Stderr: errf, Stdin: in})
	if err != nil {
		t.Fatal(err)
	}
	sub := p.Subscribe(context.Background())
	defer sub.Close()
	if q, err := f.m.Get(proc.Selector{Tag: "adopted", ByTag: true}); err != nil || q != p {
		t.Fatalf("by tag: %v %v", q, err)
	}
	if l := f.m.List(); len(l) != 1 || l[0].Pid != pid || *l[0].Config.Cwd != "/" {
		t.Fatalf("List %+v", l)
	}
	if err := p.WriteStdin(context.Background(), []byte("x\n")); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	for c := range sub.C {
		switch c.Stream {
		case proc.Stdout:
			stdout.Write(c.Data)
		case proc.Stderr:
			stderr.Write(c.Data)
		}
		c.Release()
		if stdout.Len() > 0 && stderr.Len() > 0 {
			break
		}
	}
	<-p.Done()
	if stdout.String() != "out:x\n" || stderr.String() != "err:x\n" {
		t.Fatalf("output %q %q", stdout.String(), stderr.String())
	}
	if r := p.Result(); r != (proc.Result{ExitCode: 4, Exited: true, Status: "exit status 4", Err: "exit status 4"}) {
		t.Fatalf("result %+v", r)
	}
	if q, err := f.m.GetRetained(proc.Selector{Pid: pid}); err != nil || q != p {
		t.Fatalf("retained: %v %v", q, err)
	}
}

// Killing an adopted process ends it as §8.1 says for signals (unlike the
// reference's re-adopted end events).
func TestAdoptKilled(t *testing.T) {
	f := newFixture(t)
	pid, in, out, errf := forkUnmanaged(t, "exec sleep 1000")
	p, err := f.m.Adopt(proc.Adoption{Pid: pid, Config: proc.Config{Cmd: "sleep"}, Stdout: out, Stderr: errf, Stdin: in})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if r := p.Result(); r != (proc.Result{ExitCode: -1, Status: "signal: killed", Err: "signal: killed"}) {
		t.Fatalf("result %+v", r)
	}
}

func TestAdoptNotAChild(t *testing.T) {
	f := newFixture(t)
	r, w, _ := os.Pipe()
	defer w.Close()
	_, err := f.m.Adopt(proc.Adoption{Pid: 1, Stdout: r})
	if !errors.Is(err, proc.ErrNotChild) {
		t.Fatalf("adopting pid 1: %v", err)
	}
	if _, err := r.Stat(); err == nil {
		t.Fatal("a refused adoption left its descriptor open")
	}
	if len(f.m.List()) != 0 {
		t.Fatal("refused adoption listed")
	}
}

// Restored exits are found for the time they had left, in exit order.
func TestAdoptExit(t *testing.T) {
	f := newFixture(t)
	end := proc.Result{ExitCode: 3, Exited: true, Status: "exit status 3", Err: "exit status 3"}
	for _, e := range []proc.ExportedExit{
		{Pid: 900001, Tag: "late", HasTag: true, Result: end, Remaining: 20 * time.Second},
		{Pid: 900002, Tag: "early", HasTag: true, Result: end, Remaining: 5 * time.Second},
		{Pid: 900003, Result: end, Remaining: 0}, // expired: dropped
	} {
		if err := f.m.AdoptExit(e); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := f.m.GetRetained(proc.Selector{Tag: "late", ByTag: true}); err != nil || p.Result() != end || p.Pid() != 900001 {
		t.Fatalf("late: %v %v", p, err)
	}
	if _, err := f.m.Get(proc.Selector{Pid: 900001}); !errors.Is(err, proc.ErrNotFound) {
		t.Fatalf("a retained exit is live: %v", err)
	}
	if _, err := f.m.GetRetained(proc.Selector{Pid: 900003}); !errors.Is(err, proc.ErrNotFound) {
		t.Fatalf("expired exit restored: %v", err)
	}
	f.clock.Add(6 * time.Second)
	if _, err := f.m.GetRetained(proc.Selector{Tag: "early", ByTag: true}); !errors.Is(err, proc.ErrNotFound) {
		t.Fatalf("early kept past its time: %v", err)
	}
	if _, err := f.m.GetRetained(proc.Selector{Tag: "late", ByTag: true}); err != nil {
		t.Fatalf("late dropped before its time: %v", err)
	}
	f.clock.Add(15 * time.Second)
	if _, err := f.m.GetRetained(proc.Selector{Tag: "late", ByTag: true}); !errors.Is(err, proc.ErrNotFound) {
		t.Fatalf("late kept past its time: %v", err)
	}

	// A pid that runs again refuses the restore.
	p, _ := f.start(t, proc.StartOptions{Config: helper("hang")})
	if err := f.m.AdoptExit(proc.ExportedExit{Pid: p.Pid(), Result: end, Remaining: time.Second}); !errors.Is(err, proc.ErrLive) {
		t.Fatalf("restore over a live pid: %v", err)
	}
}

// Freeze describes the live processes and the retained exits.
func TestFreezeExports(t *testing.T) {
	f := newFixture(t)
	p, _ := f.start(t, proc.StartOptions{Config: helper("hang"), Tag: "x", HasTag: true, Stdin: true, Deadline: time.Now().Add(time.Hour)})
	q, _ := f.start(t, proc.StartOptions{Config: helper("exit", "2")})
	<-q.Done()
	live, exits, dying, release := f.m.Freeze()
	if len(live) != 1 || live[0].Pid != p.Pid() || live[0].Tag != "x" || live[0].Stdout == nil || live[0].Stderr == nil || live[0].Stdin == nil || live[0].TTY != nil || live[0].Deadline.IsZero() {
		t.Fatalf("live %+v", live)
	}
	if len(exits) != 1 || exits[0].Pid != q.Pid() || exits[0].Result.ExitCode != 2 || exits[0].Remaining != proc.DefaultRetention || dying != 0 {
		t.Fatalf("exits %+v dying %d", exits, dying)
	}
	release()
	// Released, the table takes processes again and its stdin works.
	f.start(t, proc.StartOptions{Config: helper("hang")})
	if err := p.WriteStdin(context.Background(), []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// fionread is how many bytes wait unread in a pipe.
func fionread(t *testing.T, f *os.File) int {
	t.Helper()
	sc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	// TIOCINQ is FIONREAD.
	if err := sc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

func logText(t *testing.T, p *proc.Process, s proc.Stream) (string, proc.LogRead) {
	t.Helper()
	r, err := p.ReadOutput(s, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	return string(bytes.Join(r.Data, nil)), r
}

// Freeze stops the output readers before it exports the log: what the
// process prints while frozen stays in the pipe for the next image, and the
// export ends exactly where the pipe begins. An aborted handover restarts
// the readers, which pick up from there: nothing lost, nothing twice.
func TestFreezeStopsOutputAtTheLog(t *testing.T) {
	f := newFixture(t)
	p, sub := f.start(t, proc.StartOptions{Stdin: true, Tag: "w", HasTag: true,
		Config: proc.Config{Cmd: "/bin/sh", Args: []string{"-c", "echo first; read l; echo second:$l; exec sleep 1000"}}})
	defer sub.Close()
	for text, _ := logText(t, p, proc.Stdout); text != "first\n"; text, _ = logText(t, p, proc.Stdout) {
		time.Sleep(time.Millisecond)
	}
	live, _, _, release := f.m.Freeze()
	if len(live) != 1 || live[0].Log == nil || live[0].StartedAt.IsZero() {
		t.Fatalf("live %+v", live)
	}
	if s := live[0].Log.Streams[proc.Stdout]; s.Start != 0 || s.End != 6 || string(bytes.Join(s.Pieces, nil)) != "first\n" {
		t.Fatalf("exported stdout %+v", s)
	}
	// The table is frozen; the test writes stdin itself, as the carried
	// descriptor lets the next image do.
	if _, err := live[0].Stdin.Write([]byte("x\n")); err != nil {
		t.Fatal(err)
	}
	for fionread(t, live[0].Stdout) < len("second:x\n") {
		time.Sleep(time.Millisecond) // no reader takes it: it stays in the pipe
	}
	if text, r := logText(t, p, proc.Stdout); text != "first\n" || r.End != 6 {
		t.Fatalf("read while frozen: %q end %d", text, r.End)
	}
	release()
	for text, _ := logText(t, p, proc.Stdout); text != "first\nsecond:x\n"; text, _ = logText(t, p, proc.Stdout) {
		if len(text) > len("first\nsecond:x\n") {
			t.Fatalf("log after the aborted handover: %q", text)
		}
		time.Sleep(time.Millisecond)
	}
	if n := fionread(t, live[0].Stdout); n != 0 {
		t.Fatalf("%d bytes left in the pipe", n)
	}
	// The subscriber got both lines once, in order.
	var got strings.Builder
	for got.Len() < len("first\nsecond:x\n") {
		c := <-sub.C
		got.Write(c.Data)
		c.Release()
	}
	if got.String() != "first\nsecond:x\n" {
		t.Fatalf("subscriber got %q", got.String())
	}
}

// An adopted process continues the carried log: same offsets, the gap the
// old image had, new output after it; its report counts from the first byte
// and keeps the start time.
func TestAdoptContinuesLog(t *testing.T) {
	f := newFixture(t)
	pid, in, out, errf := forkUnmanaged(t, "read l; echo after:$l; exit 0")
	st := &proc.LogState{Dropped: 10}
	st.Streams[proc.Stdout] = proc.StreamLogState{Start: 10, End: 14, Dropped: 10, Pieces: [][]byte{[]byte("ab"), []byte("cd")}}
	st.Streams[proc.Stderr] = proc.StreamLogState{Start: 0, End: 2, Pieces: [][]byte{[]byte("e\n")}}
	started := time.Unix(1700000000, 123456789)
	p, err := f.m.Adopt(proc.Adoption{Pid: pid, Config: proc.Config{Cmd: "/bin/sh"}, Stdout: out, Stderr: errf, Stdin: in, Log: st, StartedAt: started})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WriteStdin(context.Background(), []byte("y\n")); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	text, r := logText(t, p, proc.Stdout)
	if text != "abcdafter:y\n" || r.Dropped != 10 || r.Offset != 10 || r.End != 22 {
		t.Fatalf("stdout %q dropped %d offset %d end %d", text, r.Dropped, r.Offset, r.End)
	}
	if text, _ := logText(t, p, proc.Stderr); text != "e\n" {
		t.Fatalf("stderr %q", text)
	}
	rep := p.Report()
	if rep.StdoutBytes != 22 || rep.StderrBytes != 2 || rep.DroppedBytes != 10 || !rep.StartedAt.Equal(started) || rep.ExitCode != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// A retained exit carries its report and its log, freed when it expires.
func TestAdoptExitWithReportAndLog(t *testing.T) {
	f := newFixture(t)
	st := &proc.LogState{}
	st.Streams[proc.PTY] = proc.StreamLogState{Start: 0, End: 5, Pieces: [][]byte{[]byte("$ ls\n")}}
	rep := proc.ExitReport{Pid: 900010, Tag: "r", HasTag: true, ExitCode: -1, Signal: "SIGKILL", OOMKilled: true,
		PeakMemory: 1 << 20, HasPeakMemory: true, PTYBytes: 5, Unavailable: []string{proc.FieldCPUUser, proc.FieldCPUSystem},
		StartedAt: time.Unix(1700000000, 1), EndedAt: time.Unix(1700000001, 2)}
	end := proc.Result{ExitCode: -1, Status: "signal: killed", Err: "signal: killed"}
	if err := f.m.AdoptExit(proc.ExportedExit{Pid: 900010, Tag: "r", HasTag: true, Result: end, Remaining: 10 * time.Second,
		Report: rep, HasReport: true, Log: st, PTY: true}); err != nil {
		t.Fatal(err)
	}
	// One from E2B's envd: no report, so the end event is all there is.
	if err := f.m.AdoptExit(proc.ExportedExit{Pid: 900011, Result: proc.Result{ExitCode: 3, Exited: true, Status: "exit status 3"}, Remaining: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	got, err := f.m.WaitReport(context.Background(), proc.Selector{Tag: "r", ByTag: true})
	if err != nil || !reflect.DeepEqual(got, rep) {
		t.Fatalf("report %+v %v\nwant %+v", got, err, rep)
	}
	if got, _ := f.m.WaitReport(context.Background(), proc.Selector{Pid: 900011}); got.Pid != 900011 || got.ExitCode != 3 || len(got.Unavailable) != 4 {
		t.Fatalf("report without a carried one %+v", got)
	}
	p, _ := f.m.GetRetained(proc.Selector{Pid: 900010})
	if text, _ := logText(t, p, proc.PTY); text != "$ ls\n" || f.m.LogBytes() == 0 {
		t.Fatalf("pty log %q, %d bytes kept", text, f.m.LogBytes())
	}
	if l := f.m.Reports(); len(l) != 2 {
		t.Fatalf("List %d reports", len(l))
	}
	f.clock.Add(11 * time.Second)
	if f.m.Retained() != 0 || f.m.LogBytes() != 0 {
		t.Fatalf("after expiry: %d retained, %d log bytes", f.m.Retained(), f.m.LogBytes())
	}
}

// A reader blocked handing a chunk to a subscriber that does not read has
// logged that chunk already: Freeze gives up waiting for it (bounded) and
// exports the log, and the readers take nothing more from the pipe. An
// aborted handover waits for that reader to return before restarting it,
// so the order of the log holds.
func TestFreezeWithAStuckSubscriber(t *testing.T) {
	f := newFixture(t)
	p, sub := f.start(t, proc.StartOptions{Stdin: true,
		Config: proc.Config{Cmd: "/bin/sh", Args: []string{"-c", "while read l; do echo $l; done"}}})
	want := ""
	for i := 1; i <= 5; i++ { // the subscriber never reads: four queue, the fifth blocks its reader
		line := strconv.Itoa(i) + "\n"
		if err := p.WriteStdin(context.Background(), []byte(line)); err != nil {
			t.Fatal(err)
		}
		want += line
		for text, _ := logText(t, p, proc.Stdout); text != want; text, _ = logText(t, p, proc.Stdout) {
			time.Sleep(time.Millisecond)
		}
	}
	if err := p.WriteStdin(context.Background(), []byte("6\n")); err != nil {
		t.Fatal(err)
	}
	live, _, _, release := f.m.Freeze()
	for fionread(t, live[0].Stdout) < 2 {
		time.Sleep(time.Millisecond) // "6\n" waits in the pipe
	}
	if s := live[0].Log.Streams[proc.Stdout]; string(bytes.Join(s.Pieces, nil)) != want || s.End != uint64(len(want)) {
		t.Fatalf("exported %q, want %q", bytes.Join(s.Pieces, nil), want)
	}
	released := make(chan struct{})
	go func() { release(); close(released) }()
	sub.Close()
	<-released
	want += "6\n"
	for text, _ := logText(t, p, proc.Stdout); text != want; text, _ = logText(t, p, proc.Stdout) {
		if len(text) > len(want) {
			t.Fatalf("log %q", text)
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.WriteStdin(context.Background(), []byte("7\n")); err != nil {
		t.Fatal(err)
	}
	want += "7\n"
	for text, _ := logText(t, p, proc.Stdout); text != want; text, _ = logText(t, p, proc.Stdout) {
		time.Sleep(time.Millisecond)
	}
}
