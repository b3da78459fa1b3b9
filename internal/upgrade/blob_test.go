package upgrade

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/envd-dev/envd/internal/gen/filesystem"
	upb "github.com/envd-dev/envd/internal/gen/upgrade"
	"github.com/envd-dev/envd/internal/proc"
)

func sampleState() State {
	cwd := "/home/user"
	return State{
		FromVer: "0.7.0",
		Procs: []Proc{
			{Pid: 10, Tag: "t", HasTag: true, CgType: "user", Config: proc.Config{Cmd: "/bin/sh", Args: []string{"-c", "x"}, Envs: map[string]string{"A": "1"}, Cwd: &cwd},
				Stdout: 200, Stderr: 201, Stdin: 202, TTY: -1, TimeoutMS: 1234,
				StartedAt: time.Unix(1700000000, 987654321), Log: sampleLog(proc.Stdout, 100, "kept", 7)},
			{Pid: 11, CgType: "pty", Config: proc.Config{Cmd: "bash"}, Stdout: -1, Stderr: -1, Stdin: -1, TTY: 208},
		},
		Exits: []Exit{
			{Pid: 12, Tag: "done", HasTag: true, Result: proc.Result{ExitCode: 3, Exited: true, Status: "exit status 3", Err: "exit status 3"}, RemainingMS: 29000,
				Report: &proc.ExitReport{Pid: 12, Tag: "done", HasTag: true, ExitCode: 3, PeakMemory: 4096, HasPeakMemory: true,
					StartedAt: time.Unix(1700000000, 1001), EndedAt: time.Unix(1700000002, 999), PTYBytes: 5, DroppedBytes: 0,
					Unavailable: []string{proc.FieldOOMKilled, proc.FieldCPUUser, proc.FieldCPUSystem}},
				Log: sampleLog(proc.PTY, 0, "$ ls\n", 0), PTY: true},
			{Pid: 13, Result: proc.Result{ExitCode: 0, Exited: true, Status: "exit status 0"}, RemainingMS: 5},
		},
		Watchers: []Watcher{{ID: "wabc", Path: "/tmp/w", Recursive: true, IncludeEntry: true,
			Pending: []*Event{{Name: "f", Type: filesystem.EventType_EVENT_TYPE_CREATE}}}},
		Mounts:   []Mount{{Path: "/mnt/v", LifecycleID: "L1"}},
		Forwards: []Forward{{Key: "7-8080", Port: 8080, ListenerPid: 7, Family: 4, SocatPid: 99}},
	}
}

func sampleLog(s proc.Stream, start uint64, data string, dropped uint64) *proc.LogState {
	l := &proc.LogState{Dropped: dropped}
	l.Streams[s] = proc.StreamLogState{Start: start, End: start + uint64(len(data)), Dropped: dropped, Pieces: [][]byte{[]byte(data)}}
	return l
}

// withoutEnvd is s as E2B's envd sees it: none of envd's additions.
func withoutEnvd(s State) State {
	s.Procs, s.Exits = slices.Clone(s.Procs), slices.Clone(s.Exits)
	for i := range s.Procs {
		s.Procs[i].StartedAt, s.Procs[i].Log = time.Time{}, nil
	}
	for i := range s.Exits {
		s.Exits[i].Report, s.Exits[i].Log, s.Exits[i].PTY = nil, nil, false
	}
	return s
}

// stripField removes every occurrence of field n from one message level.
func stripField(t *testing.T, b []byte, n protowire.Number) []byte {
	t.Helper()
	var out []byte
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			t.Fatal(protowire.ParseError(l))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[l:])
		if m < 0 {
			t.Fatal(protowire.ParseError(m))
		}
		if num != n {
			out = append(out, b[:l+m]...)
		}
		b = b[l+m:]
	}
	return out
}

// envd's additions live only in field 1001 of HandoverProc and
// HandoverExit, numbers E2B's schema does not use, and never raise the
// schema: a decoder without them (E2B's, which skips unknown fields) reads
// exactly the blob E2B's fields describe, and such a blob (E2B's) decodes
// in ours with the logs absent.
func TestBlobEnvdFieldsAreSeparable(t *testing.T) {
	in := sampleState()
	ours, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := Encode(withoutEnvd(in))
	top := fieldsOf(t, ours)
	for n := range top {
		if n > 8 {
			t.Fatalf("top-level field %d in our blob", n)
		}
	}
	var e2b []byte
	additions := 0
	for _, f := range []struct {
		n    protowire.Number
		vals [][]byte
	}{{1, top[1]}, {2, top[2]}, {3, top[3]}, {4, top[4]}, {5, top[5]}, {6, top[6]}, {7, top[7]}, {8, top[8]}} {
		for _, v := range f.vals {
			typ := protowire.BytesType
			if f.n == 1 {
				typ = protowire.VarintType
				e2b = protowire.AppendTag(e2b, f.n, typ)
				e2b = append(e2b, v...)
				continue
			}
			if f.n == 3 || f.n == 4 {
				additions += len(fieldsOf(t, v)[1001])
				v = stripField(t, v, 1001)
			}
			e2b = protowire.AppendBytes(protowire.AppendTag(e2b, f.n, typ), v)
		}
	}
	if additions != 2 { // one process, one exit
		t.Fatalf("%d envd additions in the blob, want 2", additions)
	}
	if !bytes.Equal(e2b, plain) {
		t.Fatal("our blob without field 1001 is not the blob of E2B's fields")
	}
	st, err := Decode(e2b)
	if err != nil {
		t.Fatal(err)
	}
	want := withoutEnvd(in)
	want.Schema = 1
	st.Watchers[0].Pending, want.Watchers[0].Pending = nil, nil
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("E2B's view\n got %+v\nwant %+v", st, want)
	}
	if st, _ := Decode(ours); st.Schema != 1 {
		t.Fatalf("envd's additions raised the schema to %d", st.Schema)
	}
}

func TestBlobRoundTrip(t *testing.T) {
	in := sampleState()
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Schema != 1 {
		t.Fatalf("schema %d without a guest-frozen record, want 1", out.Schema)
	}
	// Events are proto messages: compare them apart.
	if !proto.Equal(in.Watchers[0].Pending[0], out.Watchers[0].Pending[0]) {
		t.Fatalf("pending event %v", out.Watchers[0].Pending[0])
	}
	in.Watchers[0].Pending, out.Watchers[0].Pending = nil, nil
	in.Schema = 1
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip\n got %+v\nwant %+v", out, in)
	}

	in.GuestFrozen = []string{"docker/abc", "system.slice/x"}
	b, _ = Encode(in)
	if out, _ := Decode(b); out.Schema != 2 || !reflect.DeepEqual(out.GuestFrozen, in.GuestFrozen) {
		t.Fatalf("with a guest-frozen record: schema %d, record %v", out.Schema, out.GuestFrozen)
	}
}

// A blob as E2B's envd writes it, built field by field from the numbers the
// spec gives (not from our generated code), decodes; unknown fields and
// absent ones are fine.
func TestBlobFromE2B(t *testing.T) {
	msg := func(fields ...[]byte) []byte {
		var b []byte
		for _, f := range fields {
			b = append(b, f...)
		}
		return b
	}
	str := func(n protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, n, protowire.BytesType), s)
	}
	sub := func(n protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, n, protowire.BytesType), b)
	}
	varint := func(n protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, n, protowire.VarintType), v)
	}
	neg := func(n protowire.Number, v int32) []byte { return varint(n, uint64(int64(v))) } // int32 −1: ten bytes
	config := msg(str(1, "/bin/bash"), str(2, "-l"), sub(3, msg(str(1, "K"), str(2, "V"))), str(4, "/w"))
	hp := msg(varint(1, 77), str(2, "startCmd"), varint(3, 1), str(4, "user"), sub(5, config),
		varint(6, 200), varint(7, 201), varint(8, 202), neg(9, -1), varint(10, 500))
	end := msg(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), protowire.EncodeZigZag(137)),
		varint(2, 0), str(3, "killed"))
	he := msg(varint(1, 78), sub(4, end), varint(5, 1000))
	hw := msg(str(1, "wxyz"), str(2, "/home/user"), varint(3, 1), varint(4, 0), sub(5, msg(str(1, "a.txt"), varint(2, 1))))
	blob := msg(varint(1, 2), str(2, "0.6.13"), sub(3, hp), sub(4, he), sub(5, hw),
		sub(6, msg(str(1, "/mnt/nfs"), str(2, "life-1"))),
		sub(7, msg(str(1, "80-3000"), varint(2, 3000), varint(3, 80), varint(4, 4), varint(5, 81))),
		str(8, "docker/c1"), str(99, "a field from the future"))

	st, err := Decode(blob)
	if err != nil {
		t.Fatal(err)
	}
	p := st.Procs[0]
	if st.Schema != 2 || st.FromVer != "0.6.13" || p.Pid != 77 || p.Tag != "startCmd" || !p.HasTag || p.CgType != "user" ||
		p.Config.Cmd != "/bin/bash" || p.Config.Args[0] != "-l" || p.Config.Envs["K"] != "V" || *p.Config.Cwd != "/w" ||
		p.Stdout != 200 || p.Stderr != 201 || p.Stdin != 202 || p.TTY != -1 || p.TimeoutMS != 500 {
		t.Fatalf("process %+v of %+v", p, st)
	}
	if e := st.Exits[0]; e.Pid != 78 || e.Result.ExitCode != 137 || e.Result.Exited || e.Result.Status != "killed" || e.RemainingMS != 1000 {
		t.Fatalf("exit %+v", e)
	}
	if w := st.Watchers[0]; w.ID != "wxyz" || w.Path != "/home/user" || !w.Recursive || w.Pending[0].GetName() != "a.txt" || w.Pending[0].GetType() != filesystem.EventType_EVENT_TYPE_CREATE {
		t.Fatalf("watcher %+v", w)
	}
	if st.Mounts[0] != (Mount{"/mnt/nfs", "life-1"}) || st.Forwards[0] != (Forward{"80-3000", 3000, 80, 4, 81}) || st.GuestFrozen[0] != "docker/c1" {
		t.Fatalf("ledger %v forwards %v guest %v", st.Mounts, st.Forwards, st.GuestFrozen)
	}

	// And the reverse: what we write carries the same numbers.
	ours, err := Encode(st)
	if err != nil {
		t.Fatal(err)
	}
	top := fieldsOf(t, ours)
	for n, want := range map[protowire.Number]int{1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1} {
		if len(top[n]) != want {
			t.Fatalf("field %d appears %d times in our blob, want %d", n, len(top[n]), want)
		}
	}
	hpf := fieldsOf(t, top[3][0])
	if v, _ := protowire.ConsumeVarint(hpf[1][0]); v != 77 {
		t.Fatalf("HandoverProc.pid = %d", v)
	}
	if v, _ := protowire.ConsumeVarint(hpf[9][0]); int32(v) != -1 {
		t.Fatalf("HandoverProc.tty_fd = %d", int32(v))
	}
	if string(fieldsOf(t, hpf[5][0])[1][0]) != "/bin/bash" {
		t.Fatal("HandoverProc.config.cmd lost")
	}
}

// fieldsOf splits one message level into raw values by field number.
func fieldsOf(t *testing.T, b []byte) map[protowire.Number][][]byte {
	t.Helper()
	out := map[protowire.Number][][]byte{}
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			t.Fatal(protowire.ParseError(l))
		}
		b = b[l:]
		var v []byte
		switch typ {
		case protowire.VarintType:
			_, m := protowire.ConsumeVarint(b)
			v, l = b[:m], m
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(b)
		default:
			t.Fatalf("wire type %d", typ)
		}
		if l < 0 {
			t.Fatal(protowire.ParseError(l))
		}
		out[n] = append(out[n], v)
		b = b[l:]
	}
	return out
}

func TestBlobSchemaAndGarbage(t *testing.T) {
	future, _ := proto.Marshal(protoState(MaxSchema + 1))
	if _, err := Decode(future); !errors.Is(err, ErrSchema) {
		t.Fatalf("schema %d: %v", MaxSchema+1, err)
	}
	for _, s := range []uint32{0, 1, MaxSchema} {
		b, _ := proto.Marshal(protoState(s))
		if _, err := Decode(b); err != nil {
			t.Fatalf("schema %d refused: %v", s, err)
		}
	}
	if _, err := Decode([]byte{0xff, 0xff, 0xff}); err == nil {
		t.Fatal("garbage decoded")
	}
}

func protoState(schema uint32) *upb.HandoverState { return &upb.HandoverState{Schema: schema} }
