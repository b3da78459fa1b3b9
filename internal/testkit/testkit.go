// Package testkit holds what tests of several packages need and would
// otherwise copy: the test binary re-executed as helper commands, a manual
// clock, a FUSE mount, polling, a dialer inside a network namespace, probes
// for what this machine's kernel offers, and real users. It imports no envd
// package, so a domain package's tests do not pull in the daemon; the daemon
// harness, for tests that need the whole daemon, is envdtest.
package testkit

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Eventually polls cond until it holds. The deadline only guards against a
// hung test on a loaded machine; it measures nothing.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// DialIn connects to addr from inside the network namespace at nsPath. A
// socket belongs to the namespace of the thread that creates it, so the
// dialling goroutine is locked to its thread and never unlocks: the thread,
// left in the other namespace, exits with the goroutine.
func DialIn(nsPath, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("setns: %w", err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
