package processapi_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
)

func TestStartBadInput(t *testing.T) {
	s := newServer(t)
	missing := "/no/such/dir"
	other := "~root/x"
	for name, tc := range map[string]struct {
		req  *pb.StartRequest
		code connect.Code
		msg  string
	}{
		"no process":   {&pb.StartRequest{}, connect.CodeInvalidArgument, "error starting process: cmd is empty"},
		"empty cmd":    {&pb.StartRequest{Process: &pb.ProcessConfig{Args: []string{"x"}}}, connect.CodeInvalidArgument, "error starting process: cmd is empty"},
		"missing cwd":  {&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true", Cwd: &missing}}, connect.CodeInvalidArgument, "cwd '/no/such/dir' does not exist"},
		"other's home": {&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true", Cwd: &other}}, connect.CodeInvalidArgument, "invalid path: cannot expand user-specific home dir: ~root/x"},
	} {
		for codec, c := range map[string]processconnect.ProcessClient{"proto": s.client, "json": s.json} {
			st, err := c.Start(t.Context(), tc.req)
			if err == nil {
				_, err = drain[*pb.StartResponse](t, st)
			}
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != tc.code || ce.Message() != tc.msg {
				t.Errorf("%s (%s): got %v; want %v %q", name, codec, err, tc.code, tc.msg)
			}
		}
	}
	_, err := runErr(t, s.as("no-such-user-envd"), &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true"}})
	wantCode(t, err, connect.CodeUnauthenticated, "invalid username: 'no-such-user-envd'")
	s.healthy(t)
}

func TestSelectorBadInput(t *testing.T) {
	s := newServer(t)
	ctx := t.Context()
	pid := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: 999999}}
	tag := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: "nope"}}
	unset := &pb.ProcessSelector{}
	const pidMsg, tagMsg = "process with pid 999999 not found", "process with tag nope not found"
	const unsetMsg = "process selector is required: set pid or tag"
	stdin := &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("x")}}
	calls := map[string]func(*pb.ProcessSelector) error{
		"Connect": func(sel *pb.ProcessSelector) error {
			st, err := s.json.Connect(ctx, &pb.ConnectRequest{Process: sel})
			if err == nil {
				_, err = drain[*pb.ConnectResponse](t, st)
			}
			return err
		},
		"Update": func(sel *pb.ProcessSelector) error {
			_, err := s.json.Update(ctx, &pb.UpdateRequest{Process: sel})
			return err
		},
		"SendInput": func(sel *pb.ProcessSelector) error {
			_, err := s.json.SendInput(ctx, &pb.SendInputRequest{Process: sel, Input: stdin})
			return err
		},
		"SendSignal": func(sel *pb.ProcessSelector) error {
			_, err := s.json.SendSignal(ctx, &pb.SendSignalRequest{Process: sel, Signal: pb.Signal_SIGNAL_SIGKILL})
			return err
		},
		"CloseStdin": func(sel *pb.ProcessSelector) error {
			_, err := s.json.CloseStdin(ctx, &pb.CloseStdinRequest{Process: sel})
			return err
		},
		"StreamInput": func(sel *pb.ProcessSelector) error {
			in, err := s.client.StreamInput(ctx)
			if err != nil {
				return err
			}
			_ = in.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: sel}}})
			_ = in.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: stdin}}})
			_, err = in.CloseAndReceive()
			return err
		},
	}
	for name, call := range calls {
		for _, tc := range []struct {
			sel  *pb.ProcessSelector
			code connect.Code
			msg  string
		}{{pid, connect.CodeNotFound, pidMsg}, {tag, connect.CodeNotFound, tagMsg}, {unset, connect.CodeInvalidArgument, unsetMsg}, {nil, connect.CodeInvalidArgument, unsetMsg}} {
			err := call(tc.sel)
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != tc.code || ce.Message() != tc.msg {
				t.Errorf("%s(%v): got %v; want %v %q", name, tc.sel, err, tc.code, tc.msg)
			}
		}
	}
	s.healthy(t)
}

func TestRunningProcessBadInput(t *testing.T) {
	s := newServer(t)
	ctx := t.Context()
	st, err := s.json.Start(ctx, &pb.StartRequest{Process: helper("cat"), Tag: ptr("pipes")})
	if err != nil || !st.Receive() {
		t.Fatal(err, st.Err())
	}
	defer st.Close()
	sel := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: "pipes"}}

	_, err = s.json.Update(ctx, &pb.UpdateRequest{Process: sel, Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 10, Rows: 10}}})
	wantCode(t, err, connect.CodeFailedPrecondition, "error resizing tty: tty not assigned to process")
	if _, err := s.json.Update(ctx, &pb.UpdateRequest{Process: sel}); err != nil {
		t.Fatalf("Update without pty is a no-op: %v", err)
	}
	_, err = s.json.SendInput(ctx, &pb.SendInputRequest{Process: sel, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: []byte("x")}}})
	wantCode(t, err, connect.CodeFailedPrecondition, "error writing to pty: tty not assigned to process")
	_, err = s.json.SendInput(ctx, &pb.SendInputRequest{Process: sel})
	wantCode(t, err, connect.CodeInvalidArgument, "input is required: set stdin or pty")
	for _, sig := range []pb.Signal{pb.Signal_SIGNAL_UNSPECIFIED, pb.Signal(32)} {
		_, err = s.json.SendSignal(ctx, &pb.SendSignalRequest{Process: sel, Signal: sig})
		wantCode(t, err, connect.CodeInvalidArgument, "invalid signal: "+sig.String())
	}

	// StreamInput: data before start, and an empty event.
	for _, first := range []*pb.StreamInputRequest{
		{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("early")}}}}},
		{},
	} {
		in, err := s.client.StreamInput(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = in.Send(first)
		_, err = in.CloseAndReceive()
		wantCode(t, err, connect.CodeInvalidArgument, "")
	}

	// None of that disturbed the process: it still echoes and ends normally.
	if _, err := s.json.SendInput(ctx, &pb.SendInputRequest{Process: sel, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("fine")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.json.CloseStdin(ctx, &pb.CloseStdinRequest{Process: sel}); err != nil {
		t.Fatal(err)
	}
	ev, err := drain[*pb.StartResponse](t, st)
	if err != nil || string(ev.stdout) != "fine" || ev.end.GetExitCode() != 0 {
		t.Fatalf("%q %v %v", ev.stdout, ev.end, err)
	}
	s.healthy(t)
}

// Malformed bodies in every codec get InvalidArgument, not a crash.
func TestMalformedBodies(t *testing.T) {
	s := newServer(t)
	post := func(path, ctype string, body []byte, hdr ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.url+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Connect-Protocol-Version", "1")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := s.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	envelope := func(payload []byte) []byte {
		out := make([]byte, 5+len(payload))
		binary.BigEndian.PutUint32(out[1:], uint32(len(payload)))
		copy(out[5:], payload)
		return out
	}
	for _, tc := range []struct {
		name, path, ctype string
		body              []byte
		hdr               []string
	}{
		{"unary json", "/process.Process/SendSignal", "application/json", []byte(`{"process": {"pid": "x"`), nil},
		{"unary json type", "/process.Process/List", "application/json", []byte(`[1,2]`), nil},
		{"unary proto", "/process.Process/SendInput", "application/proto", []byte{0xff, 0xff, 0xff}, nil},
		{"stream json", "/process.Process/Start", "application/connect+json", envelope([]byte(`{"process":`)), nil},
		{"stream proto", "/process.Process/Start", "application/connect+proto", envelope([]byte{0x0a, 0xff}), nil},
		{"bad timeout", "/process.Process/Start", "application/connect+json", envelope([]byte(`{"process":{"cmd":"true"}}`)), []string{"Connect-Timeout-Ms", "soon"}},
	} {
		status, body := post(tc.path, tc.ctype, tc.body, tc.hdr...)
		if !strings.Contains(body, `"invalid_argument"`) {
			t.Errorf("%s: HTTP %d %s; want invalid_argument", tc.name, status, body)
		}
	}
	s.healthy(t)
}
