package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/envdtest"
)

// tmux drives one private tmux server (its own socket), so nothing else
// running on the machine is touched.
type tmux struct {
	t      *testing.T
	socket string
}

func (m tmux) run(args ...string) string {
	m.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", m.socket, "-f", "/dev/null"}, args...)...).CombinedOutput()
	if err != nil {
		m.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

func (m tmux) pane() string { return m.run("capture-pane", "-p", "-J", "-t", "t") }

// waitFor polls the pane until re matches, as a person waits for output;
// after a minute it is a hang and the test fails with what the pane shows.
func (m tmux) waitFor(re string) {
	m.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(time.Minute)
	for {
		p := m.pane()
		if rx.MatchString(p) {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("pane never showed %q; it shows:\n%s", re, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// retype types line until the pane matches re, once a second, for a minute.
func (m tmux) retype(line, re string) {
	m.t.Helper()
	rx := regexp.MustCompile(re)
	for i := 0; i < 60; i++ {
		m.run("send-keys", "-t", "t", line, "Enter")
		for j := 0; j < 20; j++ {
			if rx.MatchString(m.pane()) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	m.t.Fatalf("pane never showed %q; it shows:\n%s", re, m.pane())
}

// TestShellInTmux uses envdctl shell in a real terminal, as a person would:
// it types at the prompt, reads the screen, resizes the window, interrupts a
// command, exits, and checks the terminal is back in cooked mode.
func TestShellInTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux not installed (scripts/install-deps installs it)")
	}
	s := envdtest.Start(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "session.sh")
	big := filepath.Join(dir, "big.bin")
	if err := os.WriteFile(big, make([]byte, 20<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`#!/bin/sh
%[1]s --url %[2]s shell --env 'PS1=envd$ ' /bin/bash --norc --noprofile -i
echo "rc=$?"
stty -a
while [ ! -e %[4]s/go ]; do sleep 0.05; done
clear
%[1]s --url %[2]s cp %[3]s :%[4]s/copied.bin
echo "cp-rc=$?"
exec sleep 600
`, envdctlBin, s.URL, big, dir)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	m := tmux{t: t, socket: fmt.Sprintf("envdctl-test-%d", os.Getpid())}
	m.run("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", script)
	t.Cleanup(func() { exec.Command("tmux", "-L", m.socket, "kill-server").Run() })

	m.waitFor(`(?m)^envd\$ $`)
	m.run("send-keys", "-t", "t", "echo $((6*7))", "Enter")
	m.waitFor(`(?m)^42$`)
	m.run("send-keys", "-t", "t", "stty size", "Enter")
	m.waitFor(`(?m)^30 100$`)

	m.run("resize-window", "-t", "t", "-x", "120", "-y", "40")
	// The new size travels asynchronously (SIGWINCH, then an RPC), as in
	// any remote terminal: ask again until the shell sees it.
	m.retype("clear; stty size", `(?m)^40 120$`)

	// Ctrl-C reaches the remote terminal: the command stops, the shell stays.
	m.run("send-keys", "-t", "t", "clear", "Enter")
	m.waitFor(`\Aenvd\$ \n`)
	m.run("send-keys", "-t", "t", "sleep 1000", "Enter")
	m.waitFor(`(?m)^envd\$ sleep 1000\n\s*\z`)
	m.run("send-keys", "-t", "t", "C-c")
	m.run("send-keys", "-t", "t", "echo still-$((1+1))", "Enter")
	m.waitFor(`(?m)^still-2$`)

	m.run("send-keys", "-t", "t", "exit 7", "Enter")
	m.waitFor(`(?m)^rc=7$`)
	m.waitFor(`(?s)rc=7\n.*echoke`) // the lflags line of stty -a is out
	// stty -a ran after envdctl exited: the terminal must be cooked again.
	p := m.pane()
	after := p[strings.Index(p, "rc=7"):]
	for _, mode := range []string{"icanon", "echo", "isig"} {
		if !regexp.MustCompile(`(^|\s)` + mode + `(\s|$)`).MatchString(after) {
			t.Fatalf("terminal not restored: %s is off after exit:\n%s", mode, after)
		}
	}

	// cp on a terminal draws a progress bar on stderr; it ends at 100%.
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m.waitFor(`(?m)^cp-rc=0$`)
	if p := m.pane(); !strings.Contains(p, "100%") || !strings.Contains(p, "big.bin") || !strings.Contains(p, "MB") {
		t.Fatalf("no finished progress bar for cp:\n%s", p)
	}
	if st, err := os.Stat(filepath.Join(dir, "copied.bin")); err != nil || st.Size() != 20<<20 {
		t.Fatalf("copied file: %v, %v", st, err)
	}
}
