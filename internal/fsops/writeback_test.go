package fsops

import (
	"bytes"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// An upload spanning several writeback windows, arriving in uneven pieces,
// is stored byte for byte, and the windows started cover all but the tail.
func TestWritebackAcrossWindows(t *testing.T) {
	data := make([]byte, 3*writebackWindow+12345)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(data)
	path := filepath.Join(t.TempDir(), "big.bin")
	wr := NewWriter(slog.New(slog.DiscardHandler))
	n, err := wr.WriteFile(path, &unevenReader{data: data}, WriteOptions{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) {
		t.Fatalf("WriteFile stored %d bytes, want %d", n, len(data))
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("stored content differs from what was sent")
	}

	f, err := os.Create(filepath.Join(t.TempDir(), "direct.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := &writebackFile{f: f}
	if _, err := io.Copy(w, &unevenReader{data: data}); err != nil {
		t.Fatal(err)
	}
	if w.broken {
		t.Fatal("sync_file_range failed on this filesystem")
	}
	if w.started <= w.written-writebackWindow || w.started > w.written || w.prev >= w.started {
		t.Fatalf("writeback started for [0, %d) with the last window at %d, of %d written", w.started, w.prev, w.written)
	}
}

// unevenReader returns data in pieces of varying size, as a network body does.
type unevenReader struct {
	data []byte
	i    int
}

func (r *unevenReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	r.i++
	k := min(len(p), len(r.data), 1+(r.i*7919)%(300<<10))
	n := copy(p, r.data[:k])
	r.data = r.data[n:]
	return n, nil
}
