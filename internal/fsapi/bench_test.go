package fsapi_test

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/envd-dev/envd/internal/envdtest"
	fspb "github.com/envd-dev/envd/internal/gen/filesystem"
)

// BenchmarkListDir10k lists a directory of 10,000 files over the wire
// (binary and JSON codecs) beside the machine's raw readdir+lstat of the
// same directory, measured in the same run. Compare the ns/op of the
// sub-benchmarks.
func BenchmarkListDir10k(b *testing.B) {
	dir := b.TempDir()
	for i := range 10000 {
		if err := os.WriteFile(filepath.Join(dir, "file-"+strconv.Itoa(i)), []byte("x"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("raw-readdir-lstat", func(b *testing.B) {
		for b.Loop() {
			entries, err := os.ReadDir(dir)
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range entries {
				if _, err := os.Lstat(filepath.Join(dir, e.Name())); err != nil {
					b.Fatal(err)
				}
			}
			if len(entries) != 10000 {
				b.Fatalf("%d entries", len(entries))
			}
		}
	})
	srv := envdtest.Start(b)
	for _, c := range codecs {
		fs := client(srv, c.opts)
		b.Run("wire-"+c.name, func(b *testing.B) {
			for b.Loop() {
				resp, err := fs.ListDir(b.Context(), &fspb.ListDirRequest{Path: dir})
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.GetEntries()) != 10000 {
					b.Fatalf("%d entries", len(resp.GetEntries()))
				}
			}
		})
	}
}

// BenchmarkStat is one Stat RPC over the wire beside a raw lstat and a
// plain HTTP round trip to the same daemon.
func BenchmarkStat(b *testing.B) {
	path := filepath.Join(b.TempDir(), "file")
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run("raw-lstat", func(b *testing.B) {
		for b.Loop() {
			if _, err := os.Lstat(path); err != nil {
				b.Fatal(err)
			}
		}
	})
	srv := envdtest.Start(b)
	// The transport's own floor: one GET /health round trip on the same server.
	b.Run("http-health-roundtrip", func(b *testing.B) {
		for b.Loop() {
			resp, err := srv.Client.Get(srv.URL + "/health")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	for _, c := range codecs {
		fs := client(srv, c.opts)
		b.Run("wire-"+c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := fs.Stat(b.Context(), &fspb.StatRequest{Path: path}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMakeDirRemove is one MakeDir and one Remove RPC beside the raw
// mkdir+rmdir of the same kind of path, measured in the same run.
func BenchmarkMakeDirRemove(b *testing.B) {
	dir := b.TempDir()
	raw, wire := filepath.Join(dir, "raw"), filepath.Join(dir, "wire")
	b.Run("raw-mkdir-rmdir", func(b *testing.B) {
		for b.Loop() {
			if err := os.Mkdir(raw, 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.Remove(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	srv := envdtest.Start(b)
	fs := client(srv, codecs[0].opts)
	b.Run("wire-"+codecs[0].name, func(b *testing.B) {
		for b.Loop() {
			resp, err := fs.MakeDir(b.Context(), &fspb.MakeDirRequest{Path: wire})
			if err != nil {
				b.Fatal(err)
			}
			if resp.GetEntry().GetType() != fspb.FileType_FILE_TYPE_DIRECTORY {
				b.Fatalf("MakeDir answered %v", resp.GetEntry())
			}
			if _, err := fs.Remove(b.Context(), &fspb.RemoveRequest{Path: wire}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
