package processapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
	"github.com/envd-dev/envd/internal/testkit"
)

func ptr[T any](v T) *T { return &v }

func TestStartEventsAndExitCodes(t *testing.T) {
	s := newServer(t)
	for name, c := range map[string]processconnect.ProcessClient{"proto": s.client, "json": s.json} {
		ev := run(t, c, &pb.StartRequest{Process: helper("echo", "hi", name)})
		if string(ev.stdout) != "hi "+name+"\n" || len(ev.stderr) != 0 {
			t.Fatalf("%s: stdout %q stderr %q", name, ev.stdout, ev.stderr)
		}
		if !slices.Equal(ev.order, []string{"start", "data", "end"}) || ev.pid == 0 {
			t.Fatalf("%s: events %v pid %d", name, ev.order, ev.pid)
		}
		if e := ev.end; e.GetExitCode() != 0 || !e.GetExited() || e.GetStatus() != "exit status 0" || e.Error != nil {
			t.Fatalf("%s: end %v", name, e)
		}

		ev = run(t, c, &pb.StartRequest{Process: helper("exit", "2")})
		if e := ev.end; e.GetExitCode() != 2 || !e.GetExited() || e.GetStatus() != "exit status 2" || e.GetError() != "exit status 2" {
			t.Fatalf("%s: end %v", name, e)
		}
		ev = run(t, c, &pb.StartRequest{Process: helper("stderr", "bad")})
		if string(ev.stderr) != "bad\n" || len(ev.stdout) != 0 {
			t.Fatalf("%s: stdout %q stderr %q", name, ev.stdout, ev.stderr)
		}
	}
}

func TestSignalKillsProcessGroup(t *testing.T) {
	s := newServer(t)
	st, err := s.json.Start(t.Context(), &pb.StartRequest{Process: helper("grandchild")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ev := &events{}
	for !bytes.Contains(ev.stdout, []byte("\n")) && st.Receive() {
		ev.add(st.Msg().GetEvent())
	}
	gpid, err := strconv.Atoi(strings.TrimSpace(string(ev.stdout)))
	if err != nil {
		t.Fatalf("grandchild pid %q: %v", ev.stdout, err)
	}
	pidfd, err := unix.PidfdOpen(gpid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	if _, err := s.json.SendSignal(t.Context(), &pb.SendSignalRequest{
		Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: ev.pid}},
		Signal:  pb.Signal_SIGNAL_SIGKILL,
	}); err != nil {
		t.Fatal(err)
	}
	for st.Receive() {
		ev.add(st.Msg().GetEvent())
	}
	if ev.end.GetStatus() != "signal: killed" || ev.end.GetExitCode() != -1 || ev.end.GetExited() || ev.end.GetError() != "signal: killed" {
		t.Fatalf("end %v", ev.end)
	}
	if err := waitExit(pidfd); err != nil {
		t.Fatalf("grandchild %d survived: %v", gpid, err)
	}
	// The exited process is no longer signalable.
	_, err = s.json.SendSignal(t.Context(), &pb.SendSignalRequest{
		Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: ev.pid}},
		Signal:  pb.Signal_SIGNAL_SIGTERM,
	})
	wantCode(t, err, connect.CodeNotFound, fmt.Sprintf("process with pid %d not found", ev.pid))
}

// waitExit waits for a pidfd to report exit, bounded so a failure cannot hang.
func waitExit(fd int) error {
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 60_000)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("still running after 60s")
		}
		return nil
	}
}

func TestPTY(t *testing.T) {
	s := newServer(t)
	st, err := s.json.Start(t.Context(), &pb.StartRequest{
		Process: helper("ptysize"),
		Pty:     &pb.PTY{Size: &pb.PTY_Size{Cols: 111, Rows: 33}},
		Tag:     ptr("term"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ev := &events{}
	readUntil := func(want string) {
		t.Helper()
		for !bytes.Contains(ev.pty, []byte(want)) {
			if !st.Receive() {
				t.Fatalf("stream ended (%v) before %q; got %q", st.Err(), want, ev.pty)
			}
			ev.add(st.Msg().GetEvent())
		}
	}
	readUntil("size 33 111")
	sel := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: "term"}}
	if _, err := s.json.Update(t.Context(), &pb.UpdateRequest{Process: sel, Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 90, Rows: 20}}}); err != nil {
		t.Fatal(err)
	}
	readUntil("size 20 90")
	// Input typed into the terminal is echoed by the tty line discipline.
	if _, err := s.json.SendInput(t.Context(), &pb.SendInputRequest{Process: sel, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: []byte("typed\n")}}}); err != nil {
		t.Fatal(err)
	}
	readUntil("typed")
	_, err = s.json.CloseStdin(t.Context(), &pb.CloseStdinRequest{Process: sel})
	wantCode(t, err, connect.CodeFailedPrecondition, "error closing stdin: cannot close stdin for PTY process — send Ctrl+D (0x04) instead")
	_, err = s.json.SendInput(t.Context(), &pb.SendInputRequest{Process: sel, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("x")}}})
	wantCode(t, err, connect.CodeFailedPrecondition, "")
	if _, err := s.json.SendSignal(t.Context(), &pb.SendSignalRequest{Process: sel, Signal: pb.Signal_SIGNAL_SIGKILL}); err != nil {
		t.Fatal(err)
	}
	for st.Receive() {
		ev.add(st.Msg().GetEvent())
	}
	if ev.end.GetStatus() != "signal: killed" {
		t.Fatalf("end %v (err %v)", ev.end, st.Err())
	}
}

func TestStdinPipe(t *testing.T) {
	s := newServer(t)
	st, err := s.json.Start(t.Context(), &pb.StartRequest{Process: helper("cat"), Tag: ptr("cat")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !st.Receive() {
		t.Fatal(st.Err())
	}
	pid := st.Msg().GetEvent().GetStart().GetPid()
	sel := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
	for _, in := range []string{"a", "", "b"} { // an empty payload is fine
		if _, err := s.json.SendInput(t.Context(), &pb.SendInputRequest{Process: sel, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte(in)}}}); err != nil {
			t.Fatal(err)
		}
	}
	// StreamInput keeps order across many messages.
	in, err := s.client.StreamInput(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := "ab"
	if err := in.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: sel}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		msg := fmt.Sprintf("<%d>", i)
		want += msg
		if err := in.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte(msg)}}}}}); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			if err := in.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Keepalive{Keepalive: &pb.StreamInputRequest_KeepAlive{}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := in.CloseAndReceive(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.json.CloseStdin(t.Context(), &pb.CloseStdinRequest{Process: sel}); err != nil {
		t.Fatal(err)
	}
	ev, err := drain[*pb.StartResponse](t, st)
	if err != nil {
		t.Fatal(err)
	}
	if string(ev.stdout) != want || ev.end.GetExitCode() != 0 {
		t.Fatalf("stdout %q want %q; end %v", ev.stdout, want, ev.end)
	}

	// stdin: false connects /dev/null, so cat ends at once.
	ev = run(t, s.json, &pb.StartRequest{Process: helper("cat"), Stdin: ptr(false)})
	if len(ev.stdout) != 0 || ev.end.GetExitCode() != 0 {
		t.Fatalf("stdin false: %q %v", ev.stdout, ev.end)
	}
}

func TestEnvMergeOrder(t *testing.T) {
	s := newServer(t)
	s.env.SetInternal("WRENN_SANDBOX", "false")
	s.env.ReplaceVars(map[string]string{"FROM_INIT": "init", "BOTH": "init", "HOME": "/init-home"})
	t.Setenv("LEAK_FROM_ENVD", "1")
	ev := run(t, s.client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "env", Envs: map[string]string{"BOTH": "request", "ONLY_REQ": "r"}}})
	got := strings.Split(strings.TrimSpace(string(ev.stdout)), "\n")
	slices.Sort(got)
	u := currentUser(t)
	want := []string{
		"BOTH=request", "FROM_INIT=init", "HOME=/init-home", "LOGNAME=" + u.Name, "ONLY_REQ=r",
		"PATH=" + os.Getenv("PATH"), "SHELL=" + u.Shell, "USER=" + u.Name, "WRENN_SANDBOX=false",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("env:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Request envs apply to that process only.
	ev = run(t, s.client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "env"}})
	if bytes.Contains(ev.stdout, []byte("ONLY_REQ")) {
		t.Fatalf("request env leaked into the next process: %s", ev.stdout)
	}
}

func TestCwd(t *testing.T) {
	s := newServer(t)
	dir := t.TempDir()
	ev := run(t, s.client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "pwd", Cwd: &dir}})
	if string(ev.stdout) != dir+"\n" {
		t.Fatalf("pwd %q", ev.stdout)
	}
	ev = run(t, s.client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "pwd"}})
	if u := currentUser(t); string(ev.stdout) != u.Home+"\n" {
		t.Fatalf("default cwd %q, want home %q", ev.stdout, u.Home)
	}
	s.env.SetDefaultWorkdir(dir)
	ev = run(t, s.client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "pwd"}})
	if string(ev.stdout) != dir+"\n" {
		t.Fatalf("default workdir: pwd %q", ev.stdout)
	}
}

func TestKeepalive(t *testing.T) {
	s := newServer(t)
	c := s.with(header("Keepalive-Ping-Interval", "1"))
	st, err := c.Start(t.Context(), &pb.StartRequest{Process: helper("hang")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ev := &events{}
	for ev.keepalives < 2 && st.Receive() {
		ev.add(st.Msg().GetEvent())
	}
	if ev.keepalives < 2 || ev.pid == 0 {
		t.Fatalf("keepalives %d pid %d err %v", ev.keepalives, ev.pid, st.Err())
	}
	// Connect streams get them too.
	cs, err := c.Connect(t.Context(), &pb.ConnectRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: ev.pid}}})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	cev := &events{}
	for cev.keepalives < 1 && cs.Receive() {
		cev.add(cs.Msg().GetEvent())
	}
	if cev.keepalives < 1 || cev.pid != ev.pid {
		t.Fatalf("connect: keepalives %d pid %d err %v", cev.keepalives, cev.pid, cs.Err())
	}
}

func TestConnectTimeoutKillsProcess(t *testing.T) {
	s := newServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	st, err := s.json.Start(ctx, &pb.StartRequest{Process: helper("hang")})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := drain[*pb.StartResponse](t, st)
	wantCode(t, err, connect.CodeDeadlineExceeded, "")
	if ev.pid == 0 {
		t.Fatal("no start event before the deadline")
	}
	// The process was killed, not merely abandoned: its retained end says so.
	cs, err := s.json.Connect(t.Context(), &pb.ConnectRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: ev.pid}}})
	if err != nil {
		t.Fatal(err)
	}
	cev, err := drain[*pb.ConnectResponse](t, cs)
	if err != nil || cev.end.GetStatus() != "signal: killed" || cev.end.GetExitCode() != -1 {
		t.Fatalf("after deadline: %v %v", cev.end, err)
	}

	// Connect's own deadline bounds only its stream.
	st2, err := s.json.Start(t.Context(), &pb.StartRequest{Process: helper("hang")})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if !st2.Receive() {
		t.Fatal(st2.Err())
	}
	pid := st2.Msg().GetEvent().GetStart().GetPid()
	cctx, ccancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer ccancel()
	cs2, err := s.json.Connect(cctx, &pb.ConnectRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = drain[*pb.ConnectResponse](t, cs2)
	wantCode(t, err, connect.CodeDeadlineExceeded, "")
	list, err := s.json.List(t.Context(), &pb.ListRequest{})
	if err != nil || !slices.ContainsFunc(list.GetProcesses(), func(p *pb.ProcessInfo) bool { return p.GetPid() == pid }) {
		t.Fatalf("process %d gone after a Connect deadline: %v %v", pid, list, err)
	}
}

func TestExitRetention(t *testing.T) {
	s := newServer(t)
	ev := run(t, s.json, &pb.StartRequest{Process: helper("exit", "5"), Tag: ptr("short")})
	for _, sel := range []*pb.ProcessSelector{
		{Selector: &pb.ProcessSelector_Pid{Pid: ev.pid}},
		{Selector: &pb.ProcessSelector_Tag{Tag: "short"}},
	} {
		cs, err := s.json.Connect(t.Context(), &pb.ConnectRequest{Process: sel})
		if err != nil {
			t.Fatal(err)
		}
		cev, err := drain[*pb.ConnectResponse](t, cs)
		if err != nil || cev.pid != ev.pid || cev.end.GetExitCode() != 5 || !slices.Equal(cev.order, []string{"start", "end"}) {
			t.Fatalf("retained: %v %v %v", cev.order, cev.end, err)
		}
	}
	// Only Connect sees retained exits.
	_, err := s.json.SendInput(t.Context(), &pb.SendInputRequest{
		Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: ev.pid}},
		Input:   &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("x")}},
	})
	wantCode(t, err, connect.CodeNotFound, fmt.Sprintf("process with pid %d not found", ev.pid))
	if list, _ := s.json.List(t.Context(), &pb.ListRequest{}); len(list.GetProcesses()) != 0 {
		t.Fatalf("exited process listed: %v", list)
	}

	s.clock.Add(30 * time.Second)
	cs, err := s.json.Connect(t.Context(), &pb.ConnectRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: ev.pid}}})
	if err == nil {
		_, err = drain[*pb.ConnectResponse](t, cs)
	}
	wantCode(t, err, connect.CodeNotFound, fmt.Sprintf("process with pid %d not found", ev.pid))
	cs, err = s.json.Connect(t.Context(), &pb.ConnectRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: "short"}}})
	if err == nil {
		_, err = drain[*pb.ConnectResponse](t, cs)
	}
	wantCode(t, err, connect.CodeNotFound, "process with tag short not found")
}

func TestTagLookupAmongManyAndList(t *testing.T) {
	s := newServer(t)
	pids := map[string]uint32{}
	for i := range 30 {
		tag := fmt.Sprintf("job-%d", i%15) // each tag twice: the later start must win
		cwd := t.TempDir()
		st, err := s.client.Start(t.Context(), &pb.StartRequest{
			Process: &pb.ProcessConfig{Cmd: "sleep", Args: []string{"1000"}, Envs: map[string]string{"I": strconv.Itoa(i)}, Cwd: &cwd},
			Tag:     &tag,
		})
		if err != nil || !st.Receive() {
			t.Fatal(err, st.Err())
		}
		pids[tag] = st.Msg().GetEvent().GetStart().GetPid()
		st.Close() // the process keeps running without a reader
	}
	for tag, pid := range pids {
		cs, err := s.client.Connect(t.Context(), &pb.ConnectRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: tag}}})
		if err != nil || !cs.Receive() {
			t.Fatal(err, cs.Err())
		}
		if got := cs.Msg().GetEvent().GetStart().GetPid(); got != pid {
			t.Fatalf("tag %s: pid %d, want %d", tag, got, pid)
		}
		cs.Close()
	}
	list, err := s.json.List(t.Context(), &pb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetProcesses()); n != 30 {
		t.Fatalf("List: %d processes, want 30", n)
	}
	for _, p := range list.GetProcesses() {
		c := p.GetConfig()
		if c.GetCmd() != "sleep" || !slices.Equal(c.GetArgs(), []string{"1000"}) || c.GetEnvs()["I"] == "" || len(c.GetEnvs()) != 1 || c.Cwd == nil || p.Tag == nil {
			t.Fatalf("List entry not as sent: %v", p)
		}
	}
	// Killing by tag kills the newest of the pair.
	if _, err := s.client.SendSignal(t.Context(), &pb.SendSignalRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: "job-3"}}, Signal: pb.Signal_SIGNAL_SIGKILL}); err != nil {
		t.Fatal(err)
	}
	cs, err := s.client.Connect(t.Context(), &pb.ConnectRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pids["job-3"]}}})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := drain[*pb.ConnectResponse](t, cs); err != nil || ev.end.GetStatus() != "signal: killed" {
		t.Fatalf("kill by tag: %v %v", ev.end, err)
	}
}

func TestStartCommandUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating users needs root")
	}
	s := newServer(t)
	name, group := addUser(t)
	c := s.as(name)
	ev := run(t, c, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "whoami"}})
	if string(ev.stdout) != name+"\n" {
		t.Fatalf("whoami %q", ev.stdout)
	}
	ev = run(t, c, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "id", Args: []string{"-nG"}}})
	if groups := strings.Fields(string(ev.stdout)); !slices.Contains(groups, name) || !slices.Contains(groups, group) {
		t.Fatalf("id -nG %q, want %s and %s", ev.stdout, name, group)
	}
	ev = run(t, c, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "pwd"}})
	if string(ev.stdout) != "/home/"+name+"\n" {
		t.Fatalf("pwd %q", ev.stdout)
	}
	ev = run(t, c, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sh", Args: []string{"-c", "echo $HOME $USER $LOGNAME"}}})
	if want := fmt.Sprintf("/home/%s %s %s\n", name, name, name); string(ev.stdout) != want {
		t.Fatalf("env %q want %q", ev.stdout, want)
	}
	// The default user applies without Basic auth; root's groups do not leak.
	s.env.SetDefaultUser(name)
	ev = run(t, s.client, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "id"}})
	if !strings.HasPrefix(string(ev.stdout), "uid=") || strings.Contains(string(ev.stdout), "(root)") {
		t.Fatalf("id as default user: %q", ev.stdout)
	}
	ev = run(t, s.as("root"), &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "id", Args: []string{"-u"}}})
	if string(ev.stdout) != "0\n" {
		t.Fatalf("root: %q", ev.stdout)
	}
	_, err := runErr(t, s.as("no-such-user-envd"), &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true"}})
	wantCode(t, err, connect.CodeUnauthenticated, "invalid username: 'no-such-user-envd'")
	s.healthy(t)
}

// addUser creates a user with a home and one extra group, removed after the test.
func addUser(t *testing.T) (user, group string) {
	t.Helper()
	group = testkit.AddGroup(t, "envdg")
	return testkit.AddUser(t, "envdt", "--shell", "/bin/sh", "--groups", group).Username, group
}
