package processapi_test

import (
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/envdtest"
	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
)

// Signals other than the enum's TERM and KILL travel as their Linux numbers
// and reach the whole process group, over both codecs the clients use.
func TestSendSignalStandardNumbers(t *testing.T) {
	s := envdtest.Start(t)
	clients := map[string]processconnect.ProcessClient{
		"proto": processconnect.NewProcessClient(s.Client, s.URL),
		"json":  processconnect.NewProcessClient(s.Client, s.URL, connect.WithProtoJSON()),
	}
	for codec, c := range clients {
		for _, tc := range []struct {
			sig  pb.Signal
			name string // the shell's trap name
		}{{2, "INT"}, {1, "HUP"}, {3, "QUIT"}, {10, "USR1"}, {12, "USR2"}} {
			// The shell traps the signal and reports how its child (in the
			// same group, so signalled too, at any point after it said
			// ready) ended: the child proves the group got it, the trap
			// that the number is the right one.
			script := `trap 'echo "child $?"; exit 42' ` + tc.name + `; sh -c 'echo ready; exec sleep 1000'; echo "no signal"; exit 1`
			ctx := t.Context()
			st, err := c.Start(ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", script}}})
			if err != nil {
				t.Fatal(err)
			}
			var pid uint32
			var out strings.Builder
			var end *pb.ProcessEvent_EndEvent
			sent := false
			for st.Receive() {
				ev := st.Msg().GetEvent()
				switch {
				case ev.GetStart() != nil:
					pid = ev.GetStart().GetPid()
				case ev.GetData() != nil:
					out.Write(ev.GetData().GetStdout())
					if !sent && out.String() == "ready\n" {
						sent = true
						if _, err := c.SendSignal(ctx, &pb.SendSignalRequest{
							Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}},
							Signal:  tc.sig,
						}); err != nil {
							t.Fatalf("%s SIG%s: %v", codec, tc.name, err)
						}
					}
				case ev.GetEnd() != nil:
					end = ev.GetEnd()
				}
			}
			st.Close()
			if st.Err() != nil {
				t.Fatal(st.Err())
			}
			// sh reports a child killed by signal N as 128+N.
			want := "ready\nchild " + strconv.Itoa(128+int(tc.sig)) + "\n"
			if out.String() != want || end.GetExitCode() != 42 || !end.GetExited() {
				t.Fatalf("%s SIG%s: output %q end %v; want %q and exit 42", codec, tc.name, out.String(), end, want)
			}
		}

		// Untrapped, SIGINT ends the process by that signal.
		st, err := c.Start(t.Context(), &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep", Args: []string{"1000"}}})
		if err != nil || !st.Receive() {
			t.Fatal(err, st.Err())
		}
		pid := st.Msg().GetEvent().GetStart().GetPid()
		if _, err := c.SendSignal(t.Context(), &pb.SendSignalRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}, Signal: 2}); err != nil {
			t.Fatal(err)
		}
		var end *pb.ProcessEvent_EndEvent
		for st.Receive() {
			if e := st.Msg().GetEvent().GetEnd(); e != nil {
				end = e
			}
		}
		st.Close()
		if end.GetStatus() != "signal: interrupt" || end.GetExitCode() != -1 || end.GetExited() {
			t.Fatalf("%s: SIGINT end %v", codec, end)
		}
	}
}

// Numbers that are no standard signal stay the caller's error, and the
// daemon keeps serving.
func TestSendSignalOutOfRange(t *testing.T) {
	s := envdtest.Start(t)
	c := processconnect.NewProcessClient(s.Client, s.URL, connect.WithProtoJSON())
	ctx := t.Context()
	st, err := c.Start(ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep", Args: []string{"1000"}}})
	if err != nil || !st.Receive() {
		t.Fatal(err, st.Err())
	}
	defer st.Close()
	sel := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: st.Msg().GetEvent().GetStart().GetPid()}}
	for _, sig := range []pb.Signal{0, 32, 34, 64, 99, -2} {
		_, err := c.SendSignal(ctx, &pb.SendSignalRequest{Process: sel, Signal: sig})
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "invalid signal: ") {
			t.Fatalf("signal %d: %v, want InvalidArgument", sig, err)
		}
	}
	// A valid number for a process that is gone is NotFound, as for KILL.
	gone := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: "no-such-tag"}}
	if _, err := c.SendSignal(ctx, &pb.SendSignalRequest{Process: gone, Signal: 2}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("SIGINT to a missing process: %v, want NotFound", err)
	}
	// Still alive and listed after the refusals; SIGKILL still works.
	list, err := c.List(ctx, &pb.ListRequest{})
	if err != nil || len(list.GetProcesses()) != 1 {
		t.Fatalf("List after bad signals: %v %v", list, err)
	}
	if _, err := c.SendSignal(ctx, &pb.SendSignalRequest{Process: sel, Signal: pb.Signal_SIGNAL_SIGKILL}); err != nil {
		t.Fatal(err)
	}
}
