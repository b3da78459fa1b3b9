package processapi

import (
	"bytes"
	"encoding/binary"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/proc"
)

// envelope is what connect-go writes for msg: flags 0, big-endian length,
// the marshalled message.
func envelope(t *testing.T, msg proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(b))), b...)
}

// The raw path must put on the wire exactly the bytes connect-go would, for
// every stream and around every varint length boundary.
func TestRawDataEventBytes(t *testing.T) {
	var o rawOutput
	for _, n := range []int{1, 2, 120, 121, 122, 127, 128, 129, 16370, 16377, 16380, 16383, 16384, 16385, 256 << 10, 2097140, 2097151, 2097152, 4 << 20} {
		data := bytes.Repeat([]byte{'x'}, n)
		for _, s := range []proc.Stream{proc.Stdout, proc.Stderr, proc.PTY} {
			ev := dataEvent(proc.Chunk{Stream: s, Data: data})
			got := append(o.header(s, n), data...)
			if want := envelope(t, &pb.StartResponse{Event: ev}); !bytes.Equal(got, want) {
				t.Fatalf("stream %d, %d bytes: raw header % x, connect-go's % x", s, n, got[:min(len(got), 20)], want[:min(len(want), 20)])
			}
			if want := envelope(t, &pb.ConnectResponse{Event: ev}); !bytes.Equal(got, want) {
				t.Fatalf("stream %d, %d bytes: differs from the ConnectResponse", s, n)
			}
		}
	}
}
