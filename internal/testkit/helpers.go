package testkit

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// helperArg marks a re-executed test binary: argv = [exe, helperArg, name, args...].
const helperArg = "envd-test-helper"

// Helper returns the command and arguments that make the current test binary
// act as the named helper command (see RunHelper), so process tests need
// nothing installed.
func Helper(name string, args ...string) (string, []string) {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return exe, append([]string{helperArg, name}, args...)
}

// HelperEnv is the environment helpers should get on top of what envd sets:
// without it a race-enabled helper sleeps a second at exit (the race
// runtime's atexit_sleep_ms).
func HelperEnv() map[string]string {
	return map[string]string{"GORACE": "atexit_sleep_ms=0"}
}

// RunHelper must be the first call in a TestMain that uses Helper: when the
// binary was started as a helper it runs the helper and exits.
//
// Helpers: echo ARGS (stdout), stderr TEXT, cat (stdin→stdout), exit N,
// hang (until orphaned; "hang keep": forever), ptysize (prints "rows cols"
// of fd 0, then again after each SIGWINCH), grandchild (starts "hang keep",
// prints its pid, hangs), orphan (starts a grandchild that exits once this
// helper has exited, prints its pid, exits at once), write N (N counter bytes
// to stdout, their sha256 to stderr), pwd, pgid.
func RunHelper() {
	if len(os.Args) < 3 || os.Args[1] != helperArg {
		return
	}
	os.Exit(runHelper(os.Args[2], os.Args[3:]))
}

func runHelper(name string, args []string) int {
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	switch name {
	case "echo":
		fmt.Fprintln(out, strings.Join(args, " "))
	case "stderr":
		fmt.Fprintln(os.Stderr, strings.Join(args, " "))
	case "cat":
		out.Flush()
		if _, err := io.Copy(os.Stdout, os.Stdin); err != nil {
			return 1
		}
	case "exit":
		n, _ := strconv.Atoi(args[0])
		return n
	case "hang":
		// Exit once orphaned, so a test binary that crashes or times out
		// does not leave hanging helpers behind; "hang keep" stays (the
		// grandchild whose death must come from a group signal alone).
		if len(args) > 0 && args[0] == "keep" {
			select {}
		}
		untilOrphaned()
		return 3
	case "ptysize":
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		for {
			ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Fprintf(os.Stdout, "size %d %d\n", ws.Row, ws.Col)
			<-winch
		}
	case "grandchild", "orphan":
		exe, _ := os.Executable()
		c := exec.Command(exe, helperArg, "hang", "keep")
		if name == "orphan" {
			c = exec.Command(exe, helperArg, "cat")
		}
		var release *os.File
		if name == "orphan" {
			// The grandchild reads a pipe only we write to, so it exits
			// right after we do: surely as an orphan.
			r, w, err := os.Pipe()
			if err != nil {
				return 1
			}
			c.Stdin, release = r, w
			defer r.Close()
		}
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		_ = release // closed by our exit
		fmt.Fprintln(os.Stdout, c.Process.Pid)
		if name == "orphan" {
			return 0
		}
		untilOrphaned()
		return 3
	case "write":
		// N bytes where each 8-byte word holds its own offset, so lost,
		// duplicated or reordered chunks change the checksum; the sha256 of
		// what was written goes to stderr at the end.
		n, _ := strconv.ParseInt(args[0], 10, 64)
		out.Flush()
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for off := int64(0); off < n; {
			for i := 0; i < len(buf); i += 8 {
				binary.LittleEndian.PutUint64(buf[i:], uint64(off)+uint64(i))
			}
			k := min(n-off, int64(len(buf)))
			if _, err := os.Stdout.Write(buf[:k]); err != nil {
				return 1
			}
			h.Write(buf[:k])
			off += k
		}
		fmt.Fprintf(os.Stderr, "%x\n", h.Sum(nil))
	case "pwd":
		wd, _ := os.Getwd()
		fmt.Fprintln(out, wd)
	case "pgid":
		fmt.Fprintln(out, syscall.Getpgrp(), os.Getpid())
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", name)
		return 2
	}
	return 0
}

// untilOrphaned returns once the parent is gone, so a test binary that crashes
// or times out leaves no hanging helper behind.
func untilOrphaned() {
	parent := os.Getppid()
	for os.Getppid() == parent {
		time.Sleep(200 * time.Millisecond)
	}
}
