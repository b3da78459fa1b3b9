package processapi_test

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
)

// Binary proto clients get output through the raw path, JSON and gRPC
// clients through connect-go's Send; all must see the same events and bytes.
func TestRawAndMarshalledOutputAgree(t *testing.T) {
	s := newServer(t)
	// Large and small writes to both streams, interleaved, then an exit code.
	script := `head -c 3000000 /dev/zero | tr '\0' a; printf err >&2; seq 1 20000; head -c 70000 /dev/zero >&2; exit 3`
	req := &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", script}}, Stdin: ptr(false)}
	grpc := processconnect.NewProcessClient(s.http, s.url, connect.WithGRPC())
	var want [2][32]byte
	for i, c := range []processconnect.ProcessClient{s.client, s.json, grpc} {
		ev := run(t, c, req)
		if ev.end == nil || ev.end.GetExitCode() != 3 || ev.order[0] != "start" || ev.order[len(ev.order)-1] != "end" {
			t.Fatalf("client %d: end %v, order %v", i, ev.end, ev.order[:min(len(ev.order), 3)])
		}
		if len(ev.stdout) != 3000000+108894 || !bytes.HasPrefix(ev.stdout, bytes.Repeat([]byte{'a'}, 3000000)) ||
			!bytes.HasSuffix(ev.stdout, []byte("\n19999\n20000\n")) {
			t.Fatalf("client %d: %d bytes of stdout", i, len(ev.stdout))
		}
		if len(ev.stderr) != 3+70000 || string(ev.stderr[:3]) != "err" {
			t.Fatalf("client %d: %d bytes of stderr", i, len(ev.stderr))
		}
		got := [2][32]byte{sha256.Sum256(ev.stdout), sha256.Sum256(ev.stderr)}
		if i == 0 {
			want = got
		} else if got != want {
			t.Fatalf("client %d got other bytes than the binary proto client", i)
		}
	}

	// A pty's output takes the same path.
	preq := &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "seq 1 30000"}},
		Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}}}
	a, b := run(t, s.client, preq), run(t, s.json, preq)
	if len(a.pty) == 0 || !bytes.Equal(a.pty, b.pty) || !bytes.HasSuffix(a.pty, []byte("29999\r\n30000\r\n")) {
		t.Fatalf("pty output: %d bytes raw, %d marshalled", len(a.pty), len(b.pty))
	}
}
