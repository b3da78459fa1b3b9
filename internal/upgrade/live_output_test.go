package upgrade_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	epb "github.com/envd-dev/envd/internal/gen/envd/v1"
	"github.com/envd-dev/envd/internal/gen/envd/v1/envdv1connect"
)

// writerScript prints a numbered, time-stamped line about every
// millisecond, forking nothing (read -t on a fifo nobody writes is its
// sleep), so moved out of the workload cgroups it never stops.
const writerScript = `f=$(mktemp -u); mkfifo "$f"; exec 3<>"$f"; rm "$f"; i=0; while :; do echo "L$i $EPOCHREALTIME"; i=$((i+1)); read -t 0.001 -u 3; done`

// transcript is what envd.v1.Output/Read from offset 0 returns, without
// following: the gaps, the bytes after them from start, and the exit report
// once the process has ended.
type transcript struct {
	gaps  []string // "offset+dropped"
	start uint64   // offset of data[0], after the first gap
	data  []byte   // everything after the first gap (comparisons read quiet logs, which have one at most)
	end   uint64
	exit  *epb.ExitReport
}

func (s *sandbox) readLog(t *testing.T, ref *epb.ProcessRef, which epb.OutputStream) transcript {
	t.Helper()
	st, err := envdv1connect.NewOutputClient(s.http, s.url).Read(t.Context(), &epb.ReadRequest{Process: ref, Stream: which})
	if err != nil {
		t.Fatal(err)
	}
	var tr transcript
	next := uint64(0)
	for st.Receive() {
		switch e := st.Msg().GetEvent().(type) {
		case *epb.ReadResponse_Gap:
			// A log still being written may evict between two looks.
			if e.Gap.GetOffset() != next {
				t.Fatalf("gap %v at %d", e.Gap, next)
			}
			tr.gaps = append(tr.gaps, fmt.Sprintf("%d+%d", e.Gap.GetOffset(), e.Gap.GetDropped()))
			next += e.Gap.GetDropped()
			if len(tr.data) == 0 {
				tr.start = next
			}
		case *epb.ReadResponse_Chunk:
			if e.Chunk.GetOffset() != next {
				t.Fatalf("chunk at %d, want %d: bytes lost or repeated", e.Chunk.GetOffset(), next)
			}
			tr.data = append(tr.data, e.Chunk.GetData()...)
			next += uint64(len(e.Chunk.GetData()))
		case *epb.ReadResponse_Exit:
			tr.exit = e.Exit
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	tr.end = next
	return tr
}

// continues checks that after is before and possibly more: the same gaps,
// the same first offset, before's bytes at the same offsets.
func (before transcript) continuedBy(t *testing.T, what string, after transcript) {
	t.Helper()
	if strings.Join(before.gaps, ",") != strings.Join(after.gaps, ",") || before.start != after.start || !bytes.HasPrefix(after.data, before.data) {
		t.Fatalf("%s: before the swap gaps %v, %d bytes from %d; after gaps %v, %d bytes from %d (prefix kept: %v)", what,
			before.gaps, len(before.data), before.start, after.gaps, len(after.data), after.start, bytes.HasPrefix(after.data, before.data))
	}
}

func ref(tag string) *epb.ProcessRef {
	return &epb.ProcessRef{Selector: &epb.ProcessRef_Tag{Tag: tag}}
}

func (s *sandbox) exitReport(t *testing.T, tag string) *epb.ExitReport {
	t.Helper()
	r, err := envdv1connect.NewExitsClient(s.http, s.url).Wait(t.Context(), &epb.WaitRequest{Process: ref(tag)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// writerLines parses the writer's output, "L<i> <unix ns>" per line, and
// checks that the numbers run 0, 1, 2, ... without a hole or a repeat. It
// returns the time stamps.
func writerLines(t *testing.T, data []byte) []time.Time {
	t.Helper()
	var stamps []time.Time
	lines := strings.Split(string(data), "\n")
	for i, l := range lines[:len(lines)-1] { // the last one is empty or being written
		var n, sec, usec int64
		if _, err := fmt.Sscanf(l, "L%d %d.%d", &n, &sec, &usec); err != nil || n != int64(i) {
			t.Fatalf("writer line %d is %q (%v): output lost or repeated", i, l, err)
		}
		stamps = append(stamps, time.Unix(sec, usec*1000))
	}
	return stamps
}

// waitWriter waits until the writer has logged a line stamped after t0.
func (s *sandbox) waitWriter(t *testing.T, t0 time.Time) transcript {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		tr := s.readLog(t, ref("writer"), epb.OutputStream_OUTPUT_STREAM_STDOUT)
		if st := writerLines(t, tr.data); len(st) > 0 && st[len(st)-1].After(t0) {
			return tr
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writer logged nothing after %v", t0)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hostPid maps a pid of the sandbox's PID namespace, a child of envd, to
// this machine's.
func (s *sandbox) hostPid(t *testing.T, nsPid uint32) int {
	t.Helper()
	// Go forks from any thread, and each thread lists its own children.
	var kids []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", s.envdPid()))
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			kids = append(kids, n)
		}
	}
	for _, h := range kids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", h))
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "NSpid:" && f[2] == strconv.Itoa(int(nsPid)) {
				return h
			}
		}
	}
	t.Fatalf("pid %d is no child of envd", nsPid)
	return 0
}

// unfreezable moves a process out of the workload cgroups into one that no
// freeze touches, so it goes on printing through the whole swap: from
// before the freeze, while the old image stops reading, across the
// execve, until after the new image's /init.
func (s *sandbox) unfreezable(t *testing.T, nsPid uint32) {
	t.Helper()
	dir := filepath.Join(s.cg, "unfrozen")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(s.hostPid(t, nsPid))), 0); err != nil {
		t.Fatal(err)
	}
}

// seqOutput is what seq 1 n prints.
func seqOutput(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func sameReport(t *testing.T, what string, before, after *epb.ExitReport) {
	t.Helper()
	if !proto.Equal(before, after) {
		t.Fatalf("%s: exit report before the swap %v, after %v", what, before, after)
	}
}
