package envdapi_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
	"github.com/envd-dev/envd/internal/gen/envd/v1/envdv1connect"
	ppb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/proc"
)

// counterBytes is what envdtest's "write N" helper prints: 8-byte words
// holding their own offset.
func counterBytes(from, n int) []byte {
	out := make([]byte, 0, n)
	var w [8]byte
	for off := from - from%8; len(out) < n; off += 8 {
		binary.LittleEndian.PutUint64(w[:], uint64(off%(64<<10))+uint64(off/(64<<10))*(64<<10))
		start := 0
		if off < from {
			start = from - off
		}
		out = append(out, w[start:min(8, start+n-len(out))]...)
	}
	return out
}

// read is one Output.Read reply, in order.
type read struct {
	data    []byte
	gaps    []*pb.Gap
	exit    *pb.ExitReport
	offsets []uint64
	order   []string
}

func readAll(t testing.TB, c envdv1connect.OutputClient, req *pb.ReadRequest) (*read, error) {
	t.Helper()
	st, err := c.Read(t.Context(), req)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	r := &read{}
	next := req.GetOffset()
	for st.Receive() {
		switch e := st.Msg().GetEvent().(type) {
		case *pb.ReadResponse_Chunk:
			if e.Chunk.GetOffset() != next {
				t.Fatalf("chunk at offset %d, want %d: offsets must be contiguous", e.Chunk.GetOffset(), next)
			}
			next += uint64(len(e.Chunk.GetData()))
			r.data = append(r.data, e.Chunk.GetData()...)
			r.offsets = append(r.offsets, e.Chunk.GetOffset())
			if len(r.order) == 0 || r.order[len(r.order)-1] != "chunk" {
				r.order = append(r.order, "chunk")
			}
		case *pb.ReadResponse_Gap:
			if e.Gap.GetOffset() != next {
				t.Fatalf("gap at offset %d, want %d", e.Gap.GetOffset(), next)
			}
			next += e.Gap.GetDropped()
			r.gaps = append(r.gaps, e.Gap)
			r.order = append(r.order, "gap")
		case *pb.ReadResponse_Exit:
			r.exit = e.Exit
			r.order = append(r.order, "exit")
		case *pb.ReadResponse_Keepalive:
		}
	}
	return r, st.Err()
}

// Output written while no client is attached is read back byte for byte
// from offset 0, stdout and stderr each with their own offsets, and the
// reply of an ended process ends with its exit report.
func TestOutputReadBackAfterDetach(t *testing.T) {
	s := newServer(t, options{})
	const n = 3<<20 + 5 // several segments, not a multiple of anything
	pid := s.start(t, &ppb.StartRequest{Process: helper("write", "3145733")})
	rep, err := s.exits.Wait(t.Context(), &pb.WaitRequest{Process: pidRef(pid)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.GetExitCode() != 0 || rep.GetStdoutBytes() != n || rep.GetStderrBytes() != 65 || rep.GetDroppedBytes() != 0 || rep.GetPid() != pid {
		t.Fatalf("report %v", rep)
	}
	for name, c := range map[string]envdv1connect.OutputClient{"proto": s.output, "json": s.json.output} {
		r, err := readAll(t, c, &pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.data, counterBytes(0, n)) || len(r.gaps) != 0 || r.exit.GetStdoutBytes() != n {
			t.Fatalf("%s: read %d bytes (equal %v), gaps %v, exit %v", name, len(r.data), bytes.Equal(r.data, counterBytes(0, n)), r.gaps, r.exit)
		}
		if r.order[len(r.order)-1] != "exit" {
			t.Fatalf("%s: order %v", name, r.order)
		}
		// From the middle, and stderr on its own offsets.
		r, err = readAll(t, c, &pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT, Offset: n - 1000})
		if err != nil || !bytes.Equal(r.data, counterBytes(n-1000, 1000)) {
			t.Fatalf("%s: tail read %d bytes: %v", name, len(r.data), err)
		}
		r, err = readAll(t, c, &pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream_OUTPUT_STREAM_STDERR})
		if err != nil || len(r.data) != 65 || r.offsets[0] != 0 {
			t.Fatalf("%s: stderr %q %v", name, r.data, err)
		}
		// Reading at the end gives only the report.
		r, err = readAll(t, c, &pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT, Offset: n, Follow: true})
		if err != nil || len(r.data) != 0 || r.exit == nil {
			t.Fatalf("%s: read at end: %v %v", name, r, err)
		}
	}
}

// Beyond the per-process cap the oldest output is evicted; a read from 0
// starts with a gap of exactly the dropped bytes, then the kept tail, and
// the report counts the same drop.
func TestOutputEvictionReportsExactGap(t *testing.T) {
	const limit = 1 << 20
	s := newServer(t, options{proc: func(o *proc.Options) { o.LogLimit = limit }})
	const n = 8<<20 + 3
	pid := s.start(t, &ppb.StartRequest{Process: helper("write", "8388611")})
	rep, err := s.exits.Wait(t.Context(), &pb.WaitRequest{Process: pidRef(pid)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := readAll(t, s.output, &pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.gaps) != 1 || r.order[0] != "gap" || r.gaps[0].GetOffset() != 0 {
		t.Fatalf("order %v gaps %v", r.order, r.gaps)
	}
	dropped := r.gaps[0].GetDropped()
	kept := uint64(len(r.data))
	if dropped+kept != n || kept > limit || kept == 0 {
		t.Fatalf("dropped %d + kept %d != %d (limit %d)", dropped, kept, n, limit)
	}
	if !bytes.Equal(r.data, counterBytes(int(dropped), int(kept))) {
		t.Fatal("kept bytes differ from what the process wrote at those offsets")
	}
	// The report's stdout total and drop agree with the gap (stderr's 65
	// bytes are within the cap, so all drops are stdout's).
	if rep.GetStdoutBytes() != n || rep.GetDroppedBytes() != dropped {
		t.Fatalf("report %v; gap dropped %d", rep, dropped)
	}
	// A read that starts inside the evicted range gets the rest of the gap.
	r, err = readAll(t, s.output, &pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT, Offset: 100})
	if err != nil || len(r.gaps) != 1 || r.gaps[0].GetOffset() != 100 || r.gaps[0].GetDropped() != dropped-100 {
		t.Fatalf("gaps %v %v", r.gaps, err)
	}
}

// follow streams live until the process ends, then ends with the report;
// the output read so far is still all there.
func TestOutputFollowEndsWithReport(t *testing.T) {
	s := newServer(t, options{})
	pid := s.start(t, &ppb.StartRequest{Process: helper("cat"), Tag: ptr("job")})
	// The process waits on stdin, so the follow below is attached before
	// anything is written.
	ref := &pb.ProcessRef{Selector: &pb.ProcessRef_Tag{Tag: "job"}}
	st, err := s.json.output.Read(t.Context(), &pb.ReadRequest{Process: ref, Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sel := &ppb.ProcessSelector{Selector: &ppb.ProcessSelector_Pid{Pid: pid}}
	var got []byte
	for _, line := range []string{"one\n", "two\n"} {
		if _, err := s.process.SendInput(t.Context(), &ppb.SendInputRequest{Process: sel, Input: &ppb.ProcessInput{Input: &ppb.ProcessInput_Stdin{Stdin: []byte(line)}}}); err != nil {
			t.Fatal(err)
		}
		for len(got) < len("one\ntwo\n") && !bytes.HasSuffix(got, []byte(line)) {
			if !st.Receive() {
				t.Fatalf("stream ended early: %v", st.Err())
			}
			got = append(got, st.Msg().GetChunk().GetData()...)
		}
	}
	if _, err := s.process.CloseStdin(t.Context(), &ppb.CloseStdinRequest{Process: sel}); err != nil {
		t.Fatal(err)
	}
	var exit *pb.ExitReport
	for st.Receive() {
		if e := st.Msg().GetExit(); e != nil {
			exit = e
		} else if exit != nil {
			t.Fatal("message after the exit report")
		}
	}
	if err := st.Err(); err != nil || string(got) != "one\ntwo\n" || exit == nil || exit.GetExitCode() != 0 || exit.GetStdoutBytes() != 8 || exit.GetTag() != "job" || !exit.GetHasTag() {
		t.Fatalf("got %q exit %v err %v", got, exit, err)
	}
}

// A pty process's output is one stream, PTY.
func TestOutputPTY(t *testing.T) {
	s := newServer(t, options{})
	pid := s.start(t, &ppb.StartRequest{Process: &ppb.ProcessConfig{Cmd: "echo", Args: []string{"on the tty"}}, Pty: &ppb.PTY{Size: &ppb.PTY_Size{Cols: 80, Rows: 24}}})
	r, err := readAll(t, s.output, &pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream_OUTPUT_STREAM_PTY, Follow: true})
	if err != nil || string(r.data) != "on the tty\r\n" || r.exit.GetPtyBytes() != 12 || r.exit.GetStdoutBytes() != 0 {
		t.Fatalf("%q %v %v", r.data, r.exit, err)
	}
	_, err = readAll(t, s.output, &pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT})
	wantCode(t, err, connect.CodeInvalidArgument, "process "+itoa(pid)+" has a pty: read its pty stream")
}

func TestOutputBadInput(t *testing.T) {
	s := newServer(t, options{})
	pid := s.start(t, &ppb.StartRequest{Process: &ppb.ProcessConfig{Cmd: "echo", Args: []string{"x"}}})
	if _, err := s.exits.Wait(t.Context(), &pb.WaitRequest{Process: pidRef(pid)}); err != nil {
		t.Fatal(err)
	}
	out := pb.OutputStream_OUTPUT_STREAM_STDOUT
	for name, tc := range map[string]struct {
		req  *pb.ReadRequest
		code connect.Code
		msg  string
	}{
		"no process":   {&pb.ReadRequest{Stream: out}, connect.CodeInvalidArgument, "process is required: set pid or tag"},
		"empty ref":    {&pb.ReadRequest{Process: &pb.ProcessRef{}, Stream: out}, connect.CodeInvalidArgument, "process is required: set pid or tag"},
		"no stream":    {&pb.ReadRequest{Process: pidRef(pid)}, connect.CodeInvalidArgument, "stream is required: stdout, stderr or pty"},
		"bad stream":   {&pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream(9)}, connect.CodeInvalidArgument, "stream is required: stdout, stderr or pty"},
		"pty of pipes": {&pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream_OUTPUT_STREAM_PTY}, connect.CodeInvalidArgument, "process " + itoa(pid) + " has no pty: read stdout or stderr"},
		"unknown pid":  {&pb.ReadRequest{Process: pidRef(999999), Stream: out}, connect.CodeNotFound, "process with pid 999999 not found"},
		"unknown tag":  {&pb.ReadRequest{Process: &pb.ProcessRef{Selector: &pb.ProcessRef_Tag{Tag: "nope"}}, Stream: out}, connect.CodeNotFound, "process with tag nope not found"},
		"past the end": {&pb.ReadRequest{Process: pidRef(pid), Stream: out, Offset: 3}, connect.CodeOutOfRange, "offset 3 is beyond the 2 bytes written"},
	} {
		for codec, c := range map[string]envdv1connect.OutputClient{"proto": s.output, "json": s.json.output} {
			_, err := readAll(t, c, tc.req)
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != tc.code || ce.Message() != tc.msg {
				t.Errorf("%s (%s): %v; want %v %q", name, codec, err, tc.code, tc.msg)
			}
		}
	}
	// Without a log the service says so.
	off := newServer(t, options{proc: func(o *proc.Options) { o.LogLimit = -1 }})
	pid = off.start(t, &ppb.StartRequest{Process: &ppb.ProcessConfig{Cmd: "true"}})
	_, err := readAll(t, off.output, &pb.ReadRequest{Process: pidRef(pid), Stream: out})
	wantCode(t, err, connect.CodeFailedPrecondition, "output log is disabled")
	healthy(t, s)
}

func ptr[T any](v T) *T { return &v }
