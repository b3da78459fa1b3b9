package volumes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Starter forks a child and hands back its wait status. reaper.Reaper is
// one: as PID 1 envd's reaper waits for every child, so a command started
// with os/exec would have its exit status stolen.
type Starter interface {
	Start(fork func() (int, error)) (int, <-chan syscall.WaitStatus, error)
	KillGroup(pid int, sig syscall.Signal) error
}

// commandPath is where mount, umount, findmnt and mount.nfs live on every
// distribution; the sandbox user's PATH is not consulted.
var commandPath = []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// maxOutput bounds what is kept of a command's output for the error message.
const maxOutput = 64 << 10

// Command returns a Runner that forks argv through s in its own process
// group, with stdin on /dev/null and stdout and stderr captured together.
// A cancelled ctx kills the group.
func Command(s Starter) Runner {
	return func(ctx context.Context, argv []string) ([]byte, error) {
		if len(argv) == 0 {
			return nil, errors.New("empty command")
		}
		bin, err := lookPath(argv[0])
		if err != nil {
			return nil, err
		}
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			return nil, err
		}
		defer devnull.Close()
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
		pid, exited, err := s.Start(func() (int, error) {
			return syscall.ForkExec(bin, argv, &syscall.ProcAttr{
				Env:   env,
				Files: []uintptr{devnull.Fd(), w.Fd(), w.Fd()},
				Sys:   &syscall.SysProcAttr{Setpgid: true},
			})
		})
		w.Close()
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", argv[0], err)
		}
		var out bytes.Buffer
		read := make(chan struct{})
		go func() {
			_, _ = io.Copy(&out, io.LimitReader(r, maxOutput))
			_, _ = io.Copy(io.Discard, r)
			close(read)
		}()
		var st syscall.WaitStatus
		select {
		case st = <-exited:
		case <-ctx.Done():
			_ = s.KillGroup(pid, syscall.SIGKILL)
			st = <-exited
		}
		// A helper that went to the background may still hold the pipe;
		// its output is not worth waiting for.
		_ = r.SetReadDeadline(time.Now().Add(time.Second))
		<-read
		switch {
		case st.Exited() && st.ExitStatus() == 0:
			return out.Bytes(), nil
		case st.Exited():
			return out.Bytes(), &ExitError{Code: st.ExitStatus()}
		default:
			return out.Bytes(), fmt.Errorf("killed by signal %v", st.Signal())
		}
	}
}

func lookPath(name string) (string, error) {
	if filepath.IsAbs(name) {
		return name, nil
	}
	for _, dir := range commandPath {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: command not found in %v", name, commandPath)
}
