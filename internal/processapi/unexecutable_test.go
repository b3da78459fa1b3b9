package processapi_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
)

// A command that cannot be exec'd gets a shell's answer through the wire:
// start, the message on stderr (or the pty), end with 127 or 126. Wrenn's
// host agent reads exit_code 127 where it used to get an error.
func TestUnexecutableThroughTheWire(t *testing.T) {
	s := newServer(t)
	dir := t.TempDir()
	noShebang := filepath.Join(dir, "script")
	if err := os.WriteFile(noShebang, []byte("echo from sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		cmd    string
		code   int32
		stdout string
		stderr string
	}{
		{"missing", "no-such-binary-envd", 127, "", "no-such-binary-envd: command not found\n"},
		{"missing path", "/no/such/binary", 127, "", "/no/such/binary: command not found\n"},
		{"not executable", "/etc/passwd", 126, "", "/etc/passwd: Permission denied\n"},
		{"no #!", noShebang, 0, "from sh\n", ""},
	} {
		for codec, c := range map[string]processconnect.ProcessClient{"proto": s.client, "json": s.json} {
			ev := run(t, c, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: tc.cmd, Args: []string{"a"}}})
			want := []string{"start", "data", "end"}
			if !slices.Equal(ev.order, want) || ev.pid == 0 {
				t.Errorf("%s (%s): events %v pid %d; want %v", tc.name, codec, ev.order, ev.pid, want)
			}
			e := ev.end
			if string(ev.stdout) != tc.stdout || string(ev.stderr) != tc.stderr || e.GetExitCode() != tc.code || !e.GetExited() {
				t.Errorf("%s (%s): stdout %q stderr %q end %v", tc.name, codec, ev.stdout, ev.stderr, e)
			}
			if tc.code != 0 && (e.GetStatus() != "exit status "+itoa(tc.code) || e.GetError() != e.GetStatus()) {
				t.Errorf("%s (%s): end %v", tc.name, codec, e)
			}
		}
	}
	// A PTY process gets its start event and the answer on the terminal.
	ev := run(t, s.json, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "no-such-binary-envd"}, Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}}})
	if !slices.Equal(ev.order, []string{"start", "data", "end"}) || string(ev.pty) != "no-such-binary-envd: command not found\r\n" ||
		ev.end.GetExitCode() != 127 || ev.end.GetStatus() != "exit status 127" {
		t.Errorf("pty: events %v pty %q end %v", ev.order, ev.pty, ev.end)
	}
	s.healthy(t)
}

// The Wrenn host agent's Exec: no stdin, a Connect-Timeout-Ms deadline, the
// stream read to its end. Existing commands answer as before; a missing one
// now ends with 127 instead of failing the call. The SDKs' bash -l -c is
// unchanged, bash itself answering for a missing command.
func TestExecPatternsUnchanged(t *testing.T) {
	s := newServer(t)
	exec := func(cmd string, args ...string) *events {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		st, err := s.client.Start(ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: cmd, Args: args}, Stdin: ptr(false)})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		ev, err := drain[*pb.StartResponse](t, st)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		return ev
	}
	if ev := exec("echo", "hi"); string(ev.stdout) != "hi\n" || ev.end.GetExitCode() != 0 || ev.end.GetStatus() != "exit status 0" || ev.end.Error != nil {
		t.Errorf("echo: %q %v", ev.stdout, ev.end)
	}
	if ev := exec("sh", "-c", "echo out; echo err >&2; exit 3"); string(ev.stdout) != "out\n" || string(ev.stderr) != "err\n" || ev.end.GetExitCode() != 3 {
		t.Errorf("sh: %q %q %v", ev.stdout, ev.stderr, ev.end)
	}
	if ev := exec("no-such-binary-envd"); ev.end.GetExitCode() != 127 || string(ev.stderr) != "no-such-binary-envd: command not found\n" {
		t.Errorf("missing: %q %v", ev.stderr, ev.end)
	}
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("no /bin/bash on this machine")
	}
	if ev := exec("/bin/bash", "-l", "-c", "echo $((6*7))"); string(ev.stdout) != "42\n" || ev.end.GetExitCode() != 0 {
		t.Errorf("bash -l -c: %q %v", ev.stdout, ev.end)
	}
	ev := exec("/bin/bash", "-l", "-c", "no-such-binary-envd")
	if ev.end.GetExitCode() != 127 || !slices.Contains([]string{"/bin/bash: line 1: no-such-binary-envd: command not found\n", "bash: line 1: no-such-binary-envd: command not found\n"}, string(ev.stderr)) {
		t.Errorf("bash -l -c missing: %q %v", ev.stderr, ev.end)
	}
	// Errors that are not the command's fault keep their codes.
	missing := "/no/such/dir"
	_, err := runErr(t, s.client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "no-such-binary-envd", Cwd: &missing}})
	wantCode(t, err, connect.CodeInvalidArgument, "cwd '/no/such/dir' does not exist")
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
