package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/envd-dev/envd/e2e/vm"
	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
	"github.com/envd-dev/envd/internal/gen/envd/v1/envdv1connect"
	"github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
	"github.com/envd-dev/envd/internal/gen/process"
)

// takeToken makes sure envd has had an /init with an access token the
// suite holds: MMDS carries its hash, as a control plane's would, so the
// /init is authorised whatever token an earlier check (or the SDK suite)
// left set.
func (s *suite) takeToken(ctx context.Context) (http.Header, error) {
	tok := s.c.Token
	if tok == "" {
		tok = "orch-" + randHex(8)
	}
	s.mmds.Set(map[string]any{"instanceID": s.md["instanceID"], "envID": s.md["envID"], "accessTokenHash": vm.TokenHash(tok)})
	code, msg, h, err := s.initHeaders(ctx, map[string]any{"accessToken": tok})
	if err != nil || code != http.StatusNoContent {
		return nil, fmt.Errorf("/init with the token: %d %q %v", code, msg, err)
	}
	s.c.Token = tok
	return h, nil
}

// initHeaders is Client.Init that also returns the response headers.
func (s *suite) initHeaders(ctx context.Context, body map[string]any) (int, string, http.Header, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.c.Base+"/init", bytes.NewReader(b))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.c.HC.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(rb), resp.Header, nil
}

// thawer posts /fsthaw on a context of its own: whatever happened to the
// check's, a frozen root filesystem deadlocks the VM.
func (s *suite) thaw() (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return s.post(ctx, "/fsthaw")
}

// fsfreeze: POST /fsfreeze freezes the root filesystem (§18.3): twice 204,
// a write through Process.Start blocks until POST /fsthaw (twice 204), then
// completes.
func (s *suite) fsfreeze(ctx context.Context) (string, error) {
	if _, err := s.takeToken(ctx); err != nil {
		return "", err
	}
	anon := vm.NewClient(s.m.URL)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, anon.Base+"/fsfreeze", nil)
	resp, err := anon.HC.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		s.thaw()
		return "", fmt.Errorf("POST /fsfreeze without the token: %d, want 401", resp.StatusCode)
	}
	thawed := false
	defer func() {
		if !thawed {
			if code, msg, err := s.thaw(); err != nil || code != http.StatusNoContent {
				s.logf("fsfreeze: cleanup /fsthaw: %d %q %v", code, msg, err)
			}
		}
	}()
	for i := 1; i <= 2; i++ {
		if code, msg, err := s.post(ctx, "/fsfreeze"); err != nil || code != http.StatusNoContent {
			return "", fmt.Errorf("POST /fsfreeze #%d: %d %q %v, want 204", i, code, msg, err)
		}
	}
	// Starting reads the root filesystem only; the write and sync block.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := time.AfterFunc(60*time.Second, cancel)
	probe, err := s.c.Start(sctx, "root", &process.StartRequest{Process: &process.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "echo x > /root/fsf-probe && sync && echo done"}}})
	t.Stop()
	if err != nil {
		return "", fmt.Errorf("Start while frozen: %w", err)
	}
	select {
	case <-probe.Done():
		r, err := probe.Wait(time.Second)
		return "", fmt.Errorf("the write ended while the root filesystem was frozen: %q %q %v", r.End.GetStatus(), r.Stdout, err)
	case <-time.After(time.Second):
	}
	for i := 1; i <= 2; i++ {
		code, msg, err := s.thaw()
		if err != nil || code != http.StatusNoContent {
			return "", fmt.Errorf("POST /fsthaw #%d: %d %q %v, want 204", i, code, msg, err)
		}
		thawed = true
	}
	t0 := time.Now()
	r, err := probe.Wait(60 * time.Second)
	if err == nil {
		err = r.OK()
	}
	if err != nil {
		return "", fmt.Errorf("the write after /fsthaw: %w", err)
	}
	if r.Stdout != "done\n" {
		return "", fmt.Errorf("the write printed %q, want done", r.Stdout)
	}
	after := time.Since(t0)
	got, err := s.c.Output(ctx, "root", "cat /root/fsf-probe && rm /root/fsf-probe")
	if err != nil {
		return "", err
	}
	if got != "x\n" {
		return "", fmt.Errorf("/root/fsf-probe holds %q, want x", got)
	}
	return fmt.Sprintf("/fsfreeze without the token 401; /fsfreeze twice 204; echo x > /root/fsf-probe && sync through Start did not end within 1s while frozen; /fsthaw twice 204; then it ended exit 0 printing done %s later, the file holds x",
		after.Round(10*time.Millisecond)), nil
}

// upgrade: POST /upgrade with the host's envd replaces PID 1 in place
// (§18.1); processes, PTYs, retained exits, watchers and output logs carry
// over; a corrupt binary is refused with the workload thawed.
func (s *suite) upgrade(ctx context.Context) (string, error) {
	if _, err := s.takeToken(ctx); err != nil {
		return "", err
	}
	pc := s.c.Process("user")
	out := envdv1connect.NewOutputClient(s.c.HC, s.c.Base)
	fsc := filesystemconnect.NewFilesystemClient(s.c.HC, s.c.Base)
	if _, err := s.c.Output(ctx, "root", "rm -rf /root/up-watched && mkdir /root/up-watched"); err != nil {
		return "", err
	}
	wr, err := fsc.CreateWatcher(ctx, &filesystem.CreateWatcherRequest{Path: "/root/up-watched"})
	if err != nil {
		return "", fmt.Errorf("CreateWatcher: %w", err)
	}
	watcher := wr.GetWatcherId()
	if _, err := s.c.Output(ctx, "root", "touch /root/up-watched/before-swap"); err != nil {
		return "", err
	}
	pipe, err := s.c.Start(ctx, "user", &process.StartRequest{Tag: ptr("up-pipe"), Stdin: ptr(true), Process: &process.ProcessConfig{
		Cmd: "/bin/sh", Args: []string{"-c", "while read l; do echo got:$l; done"}}})
	if err != nil {
		return "", err
	}
	defer s.c.Signal(context.WithoutCancel(ctx), "user", pipe.Pid, process.Signal_SIGNAL_SIGKILL)
	pty, err := s.c.Start(ctx, "user", &process.StartRequest{Tag: ptr("up-pty"), Process: &process.ProcessConfig{Cmd: "/bin/sh"},
		Pty: &process.PTY{Size: &process.PTY_Size{Cols: 80, Rows: 24}}})
	if err != nil {
		return "", err
	}
	defer s.c.Signal(context.WithoutCancel(ctx), "user", pty.Pid, process.Signal_SIGNAL_SIGKILL)
	done, err := s.c.RunReq(ctx, "user", &process.StartRequest{Tag: ptr("up-done"), Process: &process.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "exit 3"}}})
	if err != nil || done.End.GetExitCode() != 3 {
		return "", fmt.Errorf("up-done: %v %v", done.End, err)
	}
	byTag := func(tag string) *process.ProcessSelector {
		return &process.ProcessSelector{Selector: &process.ProcessSelector_Tag{Tag: tag}}
	}
	input := func(line string) error {
		_, err := pc.SendInput(ctx, &process.SendInputRequest{Process: byTag("up-pipe"), Input: &process.ProcessInput{Input: &process.ProcessInput_Stdin{Stdin: []byte(line + "\n")}}})
		return err
	}
	if err := input("before"); err != nil {
		return "", err
	}
	if _, err := s.readUntil(ctx, out, "up-pipe", "got:before\n"); err != nil {
		return "", fmt.Errorf("before the swap: %w", err)
	}

	// The swap: the old envd execs the new one as it answers, so the
	// request ends with the connection, never with a status.
	bin, err := os.ReadFile(s.envdBin)
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	code, msg, err := s.postUpgrade(ctx, bin)
	if err == nil {
		return "", fmt.Errorf("POST /upgrade with bin/envd answered %d %q, want the connection dropped by the exec", code, trim(msg))
	}
	upErr := err
	healthWait := 180 * time.Second
	if s.accel.Name == "kvm" {
		healthWait = 30 * time.Second
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if err := eventually(ctx, healthWait, 200*time.Millisecond, func() (bool, error) {
		resp, err := hc.Get(s.m.URL + "/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode/100 == 2, fmt.Errorf("status %d", resp.StatusCode)
	}); err != nil {
		return "", fmt.Errorf("/health after /upgrade (%v): %w\n%s", upErr, err, s.m.ConsoleTail(20))
	}
	healthy := time.Since(t0)
	// The old envd's connections died with it: a new client, as a host
	// agent's after an upgrade.
	token := s.c.Token
	s.c = vm.NewClient(s.m.URL)
	s.c.Token = token
	pc = s.c.Process("user")
	out = envdv1connect.NewOutputClient(s.c.HC, s.c.Base)
	fsc = filesystemconnect.NewFilesystemClient(s.c.HC, s.c.Base)
	// Gated until the first /init.
	if code, body, err := s.c.Get(ctx, "/envs"); err != nil || code != http.StatusUnauthorized || !strings.Contains(body, "envd not initialized") {
		return "", fmt.Errorf("GET /envs before the post-upgrade /init: %d %q %v, want 401 envd not initialized", code, trim(body), err)
	}
	code, msg, h, err := s.initHeaders(ctx, map[string]any{"accessToken": s.c.Token})
	if err != nil || code != http.StatusNoContent {
		return "", fmt.Errorf("/init after the upgrade: %d %q %v", code, msg, err)
	}
	handover := h.Get("X-Envd-Handover")
	var rep struct {
		Failed         bool `json:"failed"`
		Procs          int  `json:"procs"`
		ProcsFailed    int  `json:"procs_failed"`
		Retained       int  `json:"retained"`
		RetainedFailed int  `json:"retained_failed"`
		Watchers       int  `json:"watchers"`
		WatchersFailed int  `json:"watchers_failed"`
	}
	if err := json.Unmarshal([]byte(handover), &rep); err != nil || rep.Failed || !strings.Contains(handover, `"failed":false`) ||
		rep.Procs < 2 || rep.Retained < 1 || rep.Watchers < 1 || rep.ProcsFailed+rep.RetainedFailed+rep.WatchersFailed > 0 {
		return "", fmt.Errorf("X-Envd-Handover %q (%v): want failed false, ≥ 2 processes, ≥ 1 retained exit, ≥ 1 watcher, none failed", handover, err)
	}
	pid1, err := s.c.Output(ctx, "root", `printf '%s %s' "$(readlink /proc/1/exe)" "$(tr '\0' ' ' </proc/1/cmdline)"`)
	if err != nil {
		return "", err
	}
	exe, cmdline, _ := strings.Cut(pid1, " ")
	if !strings.Contains(exe, "envd") || !strings.HasSuffix(strings.TrimSpace(cmdline), "--resume-handover") {
		return "", fmt.Errorf("PID 1 after the upgrade: exe %q, cmdline %q, want envd ending in --resume-handover", exe, cmdline)
	}
	if err := input("after"); err != nil {
		return "", fmt.Errorf("SendInput to up-pipe after the upgrade: %w", err)
	}
	logged, err := s.readUntil(ctx, out, "up-pipe", "got:after\n")
	if err != nil {
		return "", fmt.Errorf("up-pipe after the upgrade: %w", err)
	}
	if !strings.HasPrefix(logged, "got:before\n") {
		return "", fmt.Errorf("Output.Read of up-pipe from offset 0 after the upgrade: %q, want what it printed before the swap first", logged)
	}
	if _, err := pc.Update(ctx, &process.UpdateRequest{Process: byTag("up-pty"), Pty: &process.PTY{Size: &process.PTY_Size{Cols: 100, Rows: 40}}}); err != nil {
		return "", fmt.Errorf("Update up-pty to 100x40: %w", err)
	}
	if err := s.ptyExpect(ctx, byTag("up-pty"), "stty size\n", "40 100"); err != nil {
		return "", fmt.Errorf("up-pty after the upgrade: %w", err)
	}
	exits := envdv1connect.NewExitsClient(s.c.HC, s.c.Base)
	ex, err := exits.Wait(ctx, &pb.WaitRequest{Process: &pb.ProcessRef{Selector: &pb.ProcessRef_Tag{Tag: "up-done"}}})
	if err != nil || ex.GetExitCode() != 3 {
		return "", fmt.Errorf("the retained exit of up-done after the upgrade: %v %v, want exit 3", ex, err)
	}
	ev, err := fsc.GetWatcherEvents(ctx, &filesystem.GetWatcherEventsRequest{WatcherId: watcher})
	if err != nil {
		return "", fmt.Errorf("GetWatcherEvents %s after the upgrade: %w", watcher, err)
	}
	seen := false
	for _, e := range ev.GetEvents() {
		seen = seen || strings.HasSuffix(e.GetName(), "before-swap")
	}
	if !seen {
		return "", fmt.Errorf("watcher %s after the upgrade: events %v, want the one for before-swap", watcher, ev.GetEvents())
	}

	// A corrupt binary: the exec fails, the old image goes on, thawed.
	code, msg, err = s.postUpgrade(ctx, []byte("#not an executable\x00\x01\x02"))
	if err != nil || code != http.StatusInternalServerError || !strings.Contains(msg, "execve /usr/bin/envd.next: exec format error") {
		return "", fmt.Errorf("POST /upgrade with a corrupt body: %d %q %v, want 500 execve /usr/bin/envd.next: exec format error", code, trim(msg), err)
	}
	if code, _, err := s.c.Get(ctx, "/health"); err != nil || code/100 != 2 {
		return "", fmt.Errorf("/health after the refused upgrade: %d %v", code, err)
	}
	if err := input("thawed"); err != nil {
		return "", err
	}
	if _, err := s.readUntil(ctx, out, "up-pipe", "got:thawed\n"); err != nil {
		return "", fmt.Errorf("up-pipe after the refused upgrade (still frozen?): %w", err)
	}
	return fmt.Sprintf("POST /upgrade of bin/envd (%.1f MiB) dropped the connection (%s); /health again %s later; before /init other routes 401 envd not initialized; /init 204 with X-Envd-Handover %s; PID 1 %s %s; up-pipe echoes and Output.Read from 0 has its pre-swap output; up-pty resized to 100x40 (stty size 40 100); up-done's exit 3 retained; watcher %s kept its event; a corrupt body 500 %q, VM alive, workload thawed",
		float64(len(bin))/(1<<20), oneLine(upErr.Error()), healthy.Round(100*time.Millisecond), handover, exe, strings.TrimSpace(cmdline), watcher, strings.TrimSpace(msg)), nil
}

// postUpgrade posts bin to /upgrade on a connection of its own.
func (s *suite) postUpgrade(ctx context.Context, bin []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.c.Base+"/upgrade", bytes.NewReader(bin))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("X-Envd-Upgrade-Bin", "/usr/bin/envd.next")
	req.Header.Set("X-Access-Token", s.c.Token)
	req.Header.Set("Content-Type", "application/octet-stream")
	hc := &http.Client{Timeout: 4 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), nil
}

// readUntil reads the stdout log of the process tagged tag from offset 0,
// following, until it ends in want, and returns it.
func (s *suite) readUntil(ctx context.Context, out envdv1connect.OutputClient, tag, want string) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := time.AfterFunc(30*time.Second, cancel)
	defer t.Stop()
	stream, err := out.Read(ctx, &pb.ReadRequest{Process: &pb.ProcessRef{Selector: &pb.ProcessRef_Tag{Tag: tag}}, Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT, Follow: true})
	if err != nil {
		return "", err
	}
	defer stream.Close()
	var got strings.Builder
	for stream.Receive() {
		if c := stream.Msg().GetChunk(); c != nil {
			if c.GetOffset() != uint64(got.Len()) {
				return got.String(), fmt.Errorf("chunk at offset %d after %d bytes", c.GetOffset(), got.Len())
			}
			got.Write(c.GetData())
			if strings.HasSuffix(got.String(), want) {
				return got.String(), nil
			}
		}
	}
	return got.String(), fmt.Errorf("Output.Read of %s: no %q in %q: %v", tag, want, trim(got.String()), stream.Err())
}

// ptyExpect types input into a PTY and waits for want in its output.
func (s *suite) ptyExpect(ctx context.Context, sel *process.ProcessSelector, input, want string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pc := s.c.Process("user")
	stream, err := pc.Connect(ctx, &process.ConnectRequest{Process: sel})
	if err != nil {
		return err
	}
	defer stream.Close()
	// The start event first: output typed before it could be missed.
	if !stream.Receive() {
		return fmt.Errorf("Connect: %v", stream.Err())
	}
	if _, err := pc.SendInput(ctx, &process.SendInputRequest{Process: sel, Input: &process.ProcessInput{Input: &process.ProcessInput_Pty{Pty: []byte(input)}}}); err != nil {
		return err
	}
	t := time.AfterFunc(30*time.Second, cancel)
	defer t.Stop()
	var got string
	for stream.Receive() {
		got += string(stream.Msg().GetEvent().GetData().GetPty())
		if strings.Contains(got, want) {
			return nil
		}
	}
	return errors.Join(fmt.Errorf("no %q in the PTY output %q", want, trim(got)), stream.Err())
}
