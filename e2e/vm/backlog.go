package vm

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// hostfwdBacklog is the accept backlog given to qemu's hostfwd listeners; the
// kernel caps it at net.core.somaxconn.
const hostfwdBacklog = 4096

// widenBacklog raises the accept backlog of the socket process pid listens
// on at 127.0.0.1:port. libslirp (4.7, what qemu 7.2 links) listens on every
// hostfwd socket with a backlog of 1 and accepts one connection per main-loop
// turn, so a burst of connects (an SDK's Promise.all of ten uploads) overflows
// the host kernel's queues: SYNs are answered with syncookies, and a cookie
// whose connection finds the accept queue still full is refused with a RST
// once the client has sent its request, a reset no guest ever saw. listen(2)
// on a socket that is already listening only sets its backlog, so a copy of
// qemu's descriptor (pidfd_getfd) fixes the socket qemu keeps using.
func widenBacklog(pid, port int) error {
	inode, err := listenerInode(fmt.Sprintf("/proc/%d/net/tcp", pid), port)
	if err != nil {
		return err
	}
	fd, err := fdOfSocket(pid, inode)
	if err != nil {
		return err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	sock, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd %d/%d: %w", pid, fd, err)
	}
	defer unix.Close(sock)
	if err := unix.Listen(sock, hostfwdBacklog); err != nil {
		return fmt.Errorf("listen on qemu's 127.0.0.1:%d: %w", port, err)
	}
	return nil
}

// listenerInode finds the socket listening on 127.0.0.1:port in a
// /proc/net/tcp table.
func listenerInode(table string, port int) (string, error) {
	f, err := os.Open(table)
	if err != nil {
		return "", err
	}
	defer f.Close()
	want := fmt.Sprintf("0100007F:%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) >= 10 && fields[1] == want && fields[3] == "0A" {
			return fields[9], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no listener on 127.0.0.1:%d in %s", port, table)
}

var errNoSocketFD = errors.New("no descriptor for the socket")

func fdOfSocket(pid int, inode string) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	want := "socket:[" + inode + "]"
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && target == want {
			return strconv.Atoi(e.Name())
		}
	}
	return 0, fmt.Errorf("%w %s in %s", errNoSocketFD, want, dir)
}
