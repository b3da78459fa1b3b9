package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// Benchmarks move 256 MiB per operation (MB/s figures count file bytes, not
// wire bytes). Each envd figure has its raw counterpart in the same run: a
// trivial loopback HTTP server for the transfer, compress/gzip at BestSpeed
// (and klauspost/compress, which envd uses) for the compression, and a plain
// write+fsync to the same directory for the disk. Run with
//
//	go test -run='^$' -bench=. -benchtime=3x ./internal/httpapi
const benchSize = 256 << 20

// benchData looks like a JSON log: random ids and numbers in repeated
// structure, so it compresses like real text files (about 3:1 at BestSpeed)
// rather than trivially (zeros) or not at all (random bytes).
var benchData = sync.OnceValue(func() []byte {
	out := make([]byte, 0, benchSize+256)
	rnd := make([]byte, 8)
	levels := []string{"info", "debug", "warn"}
	for i := 0; len(out) < benchSize; i++ {
		rand.Read(rnd)
		out = fmt.Appendf(out, `{"ts":%d,"level":%q,"msg":"request handled","id":"%x","bytes":%d,"path":"/api/v1/items/%d"}`+"\n",
			1700000000+i, levels[rnd[0]%3], rnd, int(rnd[1])*int(rnd[2]), int(rnd[3])<<8|int(rnd[4]))
	}
	return out[:benchSize]
})

var benchGzip = sync.OnceValue(func() []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(benchData())
	zw.Close()
	return buf.Bytes()
})

func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableCompression: true}}
}

func mustOK(b *testing.B, resp *http.Response, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode/100 != 2 {
		body, _ := io.ReadAll(resp.Body)
		b.Fatalf("status %d: %s", resp.StatusCode, body)
	}
}

func BenchmarkDownload(b *testing.B) {
	c := start(b)
	path := filepath.Join(b.TempDir(), "big.txt")
	if err := os.WriteFile(path, benchData(), 0o644); err != nil {
		b.Fatal(err)
	}
	hc := benchClient()
	get := func(b *testing.B, u string, ae string) {
		b.SetBytes(benchSize)
		var wire int64
		for b.Loop() {
			req, _ := http.NewRequest("GET", u, nil)
			if ae != "" {
				req.Header.Set("Accept-Encoding", ae)
			}
			resp, err := hc.Do(req)
			mustOK(b, resp, err)
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			wire += n
		}
		b.ReportMetric(float64(wire)/float64(b.N)/benchSize, "wire/file")
	}
	envdURL := c.s.URL + "/files?path=" + url.QueryEscape(path)
	b.Run("envd-identity", func(b *testing.B) { get(b, envdURL, "") })
	// SetBytes counts the uncompressed size: the figure is file MiB/s.
	b.Run("envd-gzip", func(b *testing.B) { get(b, envdURL, "gzip") })

	raw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(benchData())
	}))
	defer raw.Close()
	b.Run("raw-loopback-get", func(b *testing.B) { get(b, raw.URL, "") })
	b.Run("raw-gzip-bestspeed-compress", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
			zw.Write(benchData())
			zw.Close()
		}
	})
	// The library envd uses, for the ratio of envd to its own compressor.
	b.Run("raw-klauspost-bestspeed-compress", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			zw, _ := kgzip.NewWriterLevel(io.Discard, kgzip.BestSpeed)
			zw.Write(benchData())
			zw.Close()
		}
	})
}

func BenchmarkUpload(b *testing.B) {
	c := start(b)
	dir := b.TempDir()
	target := filepath.Join(dir, "upload.txt")
	hc := benchClient()
	post := func(b *testing.B, u string, body []byte, hdr ...string) {
		b.SetBytes(benchSize)
		for b.Loop() {
			req, _ := http.NewRequest("POST", u, bytes.NewReader(body))
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := hc.Do(req)
			mustOK(b, resp, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	envdURL := c.s.URL + "/files?path=" + url.QueryEscape(target)
	b.Run("envd-identity", func(b *testing.B) {
		post(b, envdURL, benchData(), "Content-Type", "application/octet-stream")
	})
	b.Run("envd-gzip", func(b *testing.B) {
		post(b, envdURL, benchGzip(), "Content-Type", "application/octet-stream", "Content-Encoding", "gzip")
	})

	// The same into a tmpfs, which takes the disk out of the figure.
	if os.Geteuid() == 0 {
		tmpURL := c.s.URL + "/files?path=" + url.QueryEscape(filepath.Join(mountTmpfs(b, "size=600m"), "upload.txt"))
		b.Run("envd-identity-tmpfs", func(b *testing.B) {
			post(b, tmpURL, benchData(), "Content-Type", "application/octet-stream")
		})
		b.Run("envd-gzip-tmpfs", func(b *testing.B) {
			post(b, tmpURL, benchGzip(), "Content-Type", "application/octet-stream", "Content-Encoding", "gzip")
		})
	}

	raw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	defer raw.Close()
	b.Run("raw-loopback-post", func(b *testing.B) { post(b, raw.URL, benchData()) })
	b.Run("raw-gzip-bestspeed-decompress", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			zr, _ := gzip.NewReader(bytes.NewReader(benchGzip()))
			io.Copy(io.Discard, zr)
		}
	})
	b.Run("raw-klauspost-decompress", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			zr, _ := kgzip.NewReader(bytes.NewReader(benchGzip()))
			io.Copy(io.Discard, zr)
		}
	})
	b.Run("raw-disk-write-fsync", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			f, err := os.Create(filepath.Join(dir, "raw.bin"))
			if err != nil {
				b.Fatal(err)
			}
			f.Write(benchData())
			f.Sync()
			f.Close()
		}
	})
}
