package fsops

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

type failAfter struct {
	n   int
	err error
	got bytes.Buffer
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.got.Len()+len(p) > f.n {
		return 0, f.err
	}
	return f.got.Write(p)
}

func TestPipeCopy(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 100000) // 1.6 MB: several buffers
	var out bytes.Buffer
	n, err := pipeCopy(&out, iotest.HalfReader(bytes.NewReader(data)))
	if err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("copy: n=%d err=%v equal=%v", n, err, bytes.Equal(out.Bytes(), data))
	}

	out.Reset()
	boom := errors.New("boom")
	n, err = pipeCopy(&out, io.MultiReader(bytes.NewReader(data[:1000]), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) || n != 1000 || !bytes.Equal(out.Bytes(), data[:1000]) {
		t.Fatalf("read error: n=%d err=%v", n, err)
	}

	full := errors.New("disk full")
	w := &failAfter{n: pipeBufferSize, err: full}
	n, err = pipeCopy(w, bytes.NewReader(data))
	if !errors.Is(err, full) || n != pipeBufferSize {
		t.Fatalf("write error: n=%d err=%v", n, err)
	}

	out.Reset()
	if n, err := pipeCopy(&out, bytes.NewReader(nil)); n != 0 || err != nil {
		t.Fatalf("empty: %d %v", n, err)
	}
}
