package proc_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

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
