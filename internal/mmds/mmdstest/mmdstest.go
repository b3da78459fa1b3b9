// Package mmdstest runs a local server that speaks Firecracker's MMDS v2 as
// strictly as Firecracker does, for tests of the mmds client and of /init.
package mmdstest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Server: PUT /latest/api/token with X-metadata-token-ttl-seconds (1–21600)
// yields a session token; every other request needs a live token in
// X-metadata-token or gets 401; with Accept: application/json GET returns the
// metadata as one JSON object, otherwise the key names one per line.
type Server struct {
	URL string

	mu       sync.Mutex
	data     map[string]any
	tokens   map[string]time.Time
	failNext int
}

// New starts a server holding data; it stops when the test ends.
func New(t testing.TB, data map[string]any) *Server {
	s := NewHandler(data)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// NewHandler is the same server as a bare handler, for a command that
// serves it on a listener of its own (e2e/vm's host MMDS); URL stays empty.
func NewHandler(data map[string]any) *Server {
	return &Server{data: data, tokens: map[string]time.Time{}}
}

// Set replaces the metadata, as the host does after a restore.
func (s *Server) Set(data map[string]any) {
	s.mu.Lock()
	s.data = data
	s.mu.Unlock()
}

// FailNext answers the next n requests with 503, as an MMDS not ready yet.
func (s *Server) FailNext(n int) {
	s.mu.Lock()
	s.failNext = n
	s.mu.Unlock()
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failNext > 0 {
		s.failNext--
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut {
			http.Error(w, "Not allowed HTTP method.", http.StatusMethodNotAllowed)
			return
		}
		if r.Header.Get("X-Forwarded-For") != "" {
			http.Error(w, "Invalid header. Reason: Unsupported header name. Key: X-Forwarded-For", http.StatusBadRequest)
			return
		}
		ttl, err := strconv.Atoi(r.Header.Get("X-metadata-token-ttl-seconds"))
		if err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "Token time to live value not found or invalid.", http.StatusBadRequest)
			return
		}
		b := make([]byte, 32)
		rand.Read(b)
		tok := hex.EncodeToString(b)
		s.tokens[tok] = time.Now().Add(time.Duration(ttl) * time.Second)
		io.WriteString(w, tok)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "Not allowed HTTP method.", http.StatusMethodNotAllowed)
		return
	}
	exp, ok := s.tokens[r.Header.Get("X-metadata-token")]
	if !ok || time.Now().After(exp) {
		http.Error(w, "No MMDS token provided. Use `X-metadata-token` header to specify the session token.", http.StatusUnauthorized)
		return
	}
	if r.Header.Get("Accept") != "application/json" {
		for k := range s.data {
			io.WriteString(w, k+"\n")
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s.data)
}
