package proc

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// At the open-file limit, ForkExec's child fails to move its status pipe
// above the highest fd it is given and reports EBADF; Start must say what
// really happened. The situation arises when concurrent Starts free low fds
// between another Start's pipe creation and its fork; here it is set up
// directly: the child's stdout is the very last fd below the limit and two
// lower fds are free for the status pipe.
func TestForkExecAtFDLimitReportsEMFILE(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	probe, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	limit := uint64(probe.Fd()) + 32
	probe.Close()
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: limit, Max: orig.Max}); err != nil {
		t.Fatal(err)
	}
	var held []*os.File
	defer func() {
		for _, f := range held {
			f.Close()
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
			t.Error(err)
		}
	}()
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		held = append(held, f)
	}
	if len(held) < 3 {
		t.Fatalf("only %d fds below the limit %d", len(held), limit)
	}
	top := held[len(held)-1]
	if uint64(top.Fd()) != limit-1 {
		t.Fatalf("last fd %d, limit %d", top.Fd(), limit)
	}
	held[0].Close()
	held[1].Close()
	devnull := held[2].Fd()

	_, err = forkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{Files: []uintptr{devnull, top.Fd(), top.Fd()}})
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("fork with the child's fds at the limit: got %v, want %v", err, syscall.EMFILE)
	}

	// With room above the child's fds the same fork works.
	if _, err := forkExecWait(devnull); err != nil {
		t.Fatalf("fork with headroom: %v", err)
	}
}

func forkExecWait(fd uintptr) (syscall.WaitStatus, error) {
	pid, err := forkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{Files: []uintptr{fd, fd, fd}})
	if err != nil {
		return 0, err
	}
	var st syscall.WaitStatus
	_, err = syscall.Wait4(pid, &st, 0, nil)
	return st, err
}
