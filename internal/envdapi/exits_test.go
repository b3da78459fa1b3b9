package envdapi_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/cgroup"
	pb "github.com/envd-dev/envd/internal/gen/envd/v1"
	ppb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/proc"
)

// Without cgroups a report has the exit, times and byte counts, and names
// every kernel-measured field as unavailable.
func TestExitReportWithoutCgroups(t *testing.T) {
	s := newServer(t, options{})
	pid := s.start(t, &ppb.StartRequest{Process: &ppb.ProcessConfig{Cmd: "sh", Args: []string{"-c", "echo out; echo error >&2; exit 3"}}, Tag: ptr("t1")})
	rep, err := s.json.exits.Wait(t.Context(), &pb.WaitRequest{Process: &pb.ProcessRef{Selector: &pb.ProcessRef_Tag{Tag: "t1"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{proc.FieldOOMKilled, proc.FieldPeakMemory, proc.FieldCPUUser, proc.FieldCPUSystem}
	if rep.GetPid() != pid || rep.GetTag() != "t1" || rep.GetExitCode() != 3 || rep.GetSignal() != "" || rep.GetCoreDumped() || rep.GetOomKilled() ||
		rep.GetStdoutBytes() != 4 || rep.GetStderrBytes() != 6 || rep.PeakMemoryBytes != nil || rep.CpuUserUsec != nil || !slices.Equal(rep.GetUnavailable(), want) {
		t.Fatalf("report %v", rep)
	}
	// The fixture's clock does not move: start and end are its time.
	if rep.GetStartedAtUnixMs() != s.clock.Now().UnixMilli() || rep.GetEndedAtUnixMs() != rep.GetStartedAtUnixMs() {
		t.Fatalf("times %d %d, clock %d", rep.GetStartedAtUnixMs(), rep.GetEndedAtUnixMs(), s.clock.Now().UnixMilli())
	}
	// A killed process reports its signal.
	pid2 := s.start(t, &ppb.StartRequest{Process: helper("hang")})
	if _, err := s.process.SendSignal(t.Context(), &ppb.SendSignalRequest{Process: &ppb.ProcessSelector{Selector: &ppb.ProcessSelector_Pid{Pid: pid2}}, Signal: ppb.Signal_SIGNAL_SIGKILL}); err != nil {
		t.Fatal(err)
	}
	rep2, err := s.exits.Wait(t.Context(), &pb.WaitRequest{Process: pidRef(pid2)})
	if err != nil || rep2.GetSignal() != "SIGKILL" || rep2.GetExitCode() != -1 || rep2.GetOomKilled() {
		t.Fatalf("killed: %v %v", rep2, err)
	}
	// List: both, in exit order; gone once the retention passed.
	list, err := s.exits.List(t.Context(), &pb.ListExitsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var pids []uint32
	for _, r := range list.GetExits() {
		pids = append(pids, r.GetPid())
	}
	if !slices.Equal(pids, []uint32{pid, pid2}) {
		t.Fatalf("List pids %v, want %v", pids, []uint32{pid, pid2})
	}
	s.clock.Add(proc.DefaultRetention)
	if list, err := s.exits.List(t.Context(), &pb.ListExitsRequest{}); err != nil || len(list.GetExits()) != 0 {
		t.Fatalf("List after retention: %v %v", list, err)
	}
	_, err = s.exits.Wait(t.Context(), &pb.WaitRequest{Process: pidRef(pid)})
	wantCode(t, err, connect.CodeNotFound, "process with pid "+itoa(pid)+" not found")
}

func TestExitsBadInput(t *testing.T) {
	s := newServer(t, options{})
	_, err := s.exits.Wait(t.Context(), &pb.WaitRequest{})
	wantCode(t, err, connect.CodeInvalidArgument, "process is required: set pid or tag")
	_, err = s.json.exits.Wait(t.Context(), &pb.WaitRequest{Process: pidRef(999999)})
	wantCode(t, err, connect.CodeNotFound, "process with pid 999999 not found")
	// The call's deadline bounds the wait, not the process.
	pid := s.start(t, &ppb.StartRequest{Process: helper("hang")})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = s.exits.Wait(ctx, &pb.WaitRequest{Process: pidRef(pid)})
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("Wait past its deadline: %v", err)
	}
	if _, err := s.procs.Get(proc.Selector{Pid: int(pid)}); err != nil {
		t.Fatalf("process gone after a Wait timed out: %v", err)
	}
	healthy(t, s)
}

// With a cgroup per command the report has the CPU time the kernel
// counted (cpu.stat is a core file, present without the cpu controller),
// close to what the process itself saw in getrusage. Memory fields need the
// memory controller.
func TestExitReportCPUFromCgroup(t *testing.T) {
	cg, root := testCgroups(t)
	s := newServer(t, options{cgroups: cg})
	pid := s.start(t, &ppb.StartRequest{Process: ownCmd("spin", "200")})
	rep, err := s.exits.Wait(t.Context(), &pb.WaitRequest{Process: pidRef(pid)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := readAll(t, s.output, &pb.ReadRequest{Process: pidRef(pid), Stream: pb.OutputStream_OUTPUT_STREAM_STDOUT})
	if err != nil {
		t.Fatal(err)
	}
	seen, err := strconv.ParseUint(strings.Fields(string(r.data))[0], 10, 64)
	if err != nil {
		t.Fatalf("spin printed %q", r.data)
	}
	if rep.CpuUserUsec == nil || rep.CpuSystemUsec == nil || slices.Contains(rep.GetUnavailable(), proc.FieldCPUUser) {
		t.Fatalf("report %v", rep)
	}
	// Within 10 % of what the process saw: the kernel splits a cgroup's time
	// into user and system from ticks, so its user time is close to, not at
	// least, getrusage's; the group also counts the exec.
	if got := float64(rep.GetCpuUserUsec()); got < 0.9*float64(seen) || got > 1.1*float64(seen)+20_000 {
		t.Fatalf("cgroup user time %d µs, the process saw %d µs", rep.GetCpuUserUsec(), seen)
	}
	mem := hasController(t, filepath.Join(root, string(cgroup.User)), "memory")
	if mem != (rep.PeakMemoryBytes != nil) || mem == slices.Contains(rep.GetUnavailable(), proc.FieldOOMKilled) {
		t.Fatalf("memory controller %v, report %v", mem, rep)
	}
	if _, err := os.Stat(filepath.Join(root, string(cgroup.User), "cmd-1")); !os.IsNotExist(err) {
		t.Fatalf("the command's cgroup is still there: %v", err)
	}
}

// hasController reports whether dir's children may use the controller.
func hasController(t testing.TB, dir, name string) bool {
	t.Helper()
	ctrls, err := cgroup.Controllers(dir)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(ctrls, name)
}

// needMemory skips unless the memory controller reaches the command groups,
// as in the VM (this development host's cgroup2 has hugetlb only).
func needMemory(t *testing.T, root string) {
	t.Helper()
	ctrls, _ := cgroup.Controllers(root)
	if !slices.Contains(ctrls, "memory") {
		mount, _ := cgroup.Controllers(filepath.Dir(root))
		t.Skipf("no memory controller for cgroups under %s (its cgroup2 mount offers %q); the VM suite runs this", filepath.Dir(root), strings.Join(mount, " "))
	}
}

// Peak memory of a process that touched 200 MiB is within 10 % of it.
func TestExitReportPeakMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("under -race the helper's shadow memory doubles its peak; run without -race")
	}
	cg, root := testCgroups(t)
	needMemory(t, root)
	s := newServer(t, options{cgroups: cg})
	const size = 200 << 20
	pid := s.start(t, &ppb.StartRequest{Process: ownCmd("alloc", strconv.Itoa(size))})
	rep, err := s.exits.Wait(t.Context(), &pb.WaitRequest{Process: pidRef(pid)})
	if err != nil || rep.GetExitCode() != 0 || rep.PeakMemoryBytes == nil {
		t.Fatalf("%v %v", rep, err)
	}
	t.Logf("peak memory %d bytes for %d touched", rep.GetPeakMemoryBytes(), size)
	if p := float64(rep.GetPeakMemoryBytes()); p < 0.9*size || p > 1.1*size {
		t.Fatalf("peak memory %d bytes for %d allocated", rep.GetPeakMemoryBytes(), size)
	}
	if rep.GetOomKilled() || len(rep.GetUnavailable()) != 0 {
		t.Fatalf("report %v", rep)
	}
}

// A memory hog killed by the kernel says so: oom_killed from the group's
// own memory.events, not guessed from SIGKILL.
func TestExitReportOOMKilled(t *testing.T) {
	cg, root := testCgroups(t)
	needMemory(t, root)
	if err := cg.SetMemoryMax(cgroup.User, 64<<20); err != nil {
		t.Fatal(err)
	}
	// With swap the hog would be swapped out instead of killed.
	if swap := filepath.Join(root, string(cgroup.User), "memory.swap.max"); fileExists(swap) {
		if err := os.WriteFile(swap, []byte("0"), 0); err != nil {
			t.Fatal(err)
		}
	}
	s := newServer(t, options{cgroups: cg})
	pid := s.start(t, &ppb.StartRequest{Process: ownCmd("alloc", strconv.Itoa(512<<20))})
	rep, err := s.exits.Wait(t.Context(), &pb.WaitRequest{Process: pidRef(pid)})
	if err != nil || !rep.GetOomKilled() || rep.GetSignal() != "SIGKILL" {
		t.Fatalf("%v %v", rep, err)
	}
	t.Logf("memory hog: %v", rep)
	// An ordinary SIGKILL is not an OOM kill.
	pid = s.start(t, &ppb.StartRequest{Process: helper("hang")})
	if _, err := s.process.SendSignal(t.Context(), &ppb.SendSignalRequest{Process: &ppb.ProcessSelector{Selector: &ppb.ProcessSelector_Pid{Pid: pid}}, Signal: ppb.Signal_SIGNAL_SIGKILL}); err != nil {
		t.Fatal(err)
	}
	if rep, err := s.exits.Wait(t.Context(), &pb.WaitRequest{Process: pidRef(pid)}); err != nil || rep.GetOomKilled() || rep.GetSignal() != "SIGKILL" {
		t.Fatalf("%v %v", rep, err)
	}
}

// 1,000 short processes leave no cgroup, no log and no descriptor behind
// once their reports expired.
func TestManyShortProcessesLeaveNothing(t *testing.T) {
	cg, root := testCgroups(t)
	s := newServer(t, options{cgroups: cg})
	req := &ppb.StartRequest{Process: &ppb.ProcessConfig{Cmd: "echo", Args: []string{"short"}}, Stdin: ptr(false)}
	run := func() uint32 {
		st, err := s.process.Start(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var pid uint32
		for st.Receive() {
			if e := st.Msg().GetEvent().GetStart(); e != nil {
				pid = e.GetPid()
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	for range 10 { // warm up connections and pools
		run()
	}
	s.clock.Add(proc.DefaultRetention)
	s.procs.Retained()
	fds := countFDs(t)
	for i := range 1000 {
		run()
		if i%250 == 0 { // a pty now and then, the other group
			st, err := s.process.Start(t.Context(), &ppb.StartRequest{Process: req.Process, Pty: &ppb.PTY{Size: &ppb.PTY_Size{Cols: 80, Rows: 24}}})
			if err != nil {
				t.Fatal(err)
			}
			for st.Receive() {
			}
			st.Close()
		}
	}
	if list, err := s.exits.List(t.Context(), &pb.ListExitsRequest{}); err != nil || len(list.GetExits()) < 1000 {
		t.Fatalf("reports before expiry: %d %v", len(list.GetExits()), err)
	}
	if s.procs.LogBytes() == 0 {
		t.Fatal("no output logged while the reports are kept")
	}
	s.clock.Add(proc.DefaultRetention)
	if list, err := s.exits.List(t.Context(), &pb.ListExitsRequest{}); err != nil || len(list.GetExits()) != 0 {
		t.Fatalf("reports after expiry: %d %v", len(list.GetExits()), err)
	}
	if n := s.procs.Retained(); n != 0 {
		t.Fatalf("%d processes still in the table", n)
	}
	if b := s.procs.LogBytes(); b != 0 {
		t.Fatalf("%d bytes of output logs kept after the reports expired", b)
	}
	for _, g := range []cgroup.Group{cgroup.User, cgroup.PTY} {
		ents, err := os.ReadDir(filepath.Join(root, string(g)))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.IsDir() {
				t.Errorf("cgroup %s/%s left behind", g, e.Name())
			}
		}
	}
	if after := countFDs(t); after > fds+4 {
		t.Fatalf("fds %d before, %d after", fds, after)
	}
}

func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
