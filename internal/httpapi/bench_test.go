package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Benchmarks move 256 MiB per operation. Each envd figure has its raw
// counterpart in the same run: a trivial loopback HTTP server for the
// transfer, compress/gzip at BestSpeed for the compression, and a plain
// write+fsync to the same directory for the disk. Run with
//
//	go test -run='^$' -bench=. -benchtime=3x ./internal/httpapi
const benchSize = 256 << 20

// benchData is base64 of random bytes: compressible about as well as typical
// text (~75 %), so gzip does real work without being trivial.
var benchData = sync.OnceValue(func() []byte {
	raw := make([]byte, benchSize/4*3)
	rand.Read(raw)
	return []byte(base64.StdEncoding.EncodeToString(raw))[:benchSize]
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
		for b.Loop() {
			req, _ := http.NewRequest("GET", u, nil)
			if ae != "" {
				req.Header.Set("Accept-Encoding", ae)
			}
			resp, err := hc.Do(req)
			mustOK(b, resp, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
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
