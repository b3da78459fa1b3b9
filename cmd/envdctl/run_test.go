package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"syscall"
	"testing"
)

// Against an envd that never answers Start, Ctrl-C is held for the process
// that may yet exist, and a second signal gives up: envdctl exits 130.
func TestRunInterruptBeforeStart(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	cmd := exec.Command(envdctlBin, "--url", srv.URL, "run", "--", "sleep", "1000")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	<-arrived // envdctl is inside Start, with its handler installed
	// Two different signals, as two of one kind may merge into one
	// delivery; each counts as a Ctrl-C.
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Process.Signal(syscall.SIGTERM)
	waitOrKill(t, cmd)
	if code := cmd.ProcessState.ExitCode(); code != 130 || errb.Len() != 0 {
		t.Fatalf("exit %d, stderr %q; want 130 and nothing", code, errb.String())
	}
}
