package mmds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/mmds/mmdstest"
)

func newFake(t *testing.T, data map[string]any) (*mmdstest.Server, *mmdstest.Server) {
	srv := mmdstest.New(t, data)
	return srv, srv
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestGet(t *testing.T) {
	_, srv := newFake(t, map[string]any{
		"instanceID": "sbx-1", "envID": "tmpl-1", "accessTokenHash": "abc", "address": "http://logs",
		"extra": map[string]any{"nested": true},
	})
	c := &Client{BaseURL: srv.URL, HTTP: http.DefaultClient}
	md, err := c.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := Metadata{InstanceID: "sbx-1", EnvID: "tmpl-1", AccessTokenHash: "abc", Address: "http://logs"}
	if md != want {
		t.Errorf("Get = %+v, want %+v", md, want)
	}
	h, err := c.AccessTokenHash(context.Background())
	if err != nil || h != "abc" {
		t.Errorf("AccessTokenHash = %q, %v", h, err)
	}
}

// TestFakeIsStrict makes sure the fake refuses what Firecracker refuses, so
// TestGet proves the client sends the TTL and token headers.
func TestFakeIsStrict(t *testing.T) {
	_, srv := newFake(t, map[string]any{"instanceID": "x"})
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
		want         int
	}{
		{"PUT", "/latest/api/token", nil, 400},
		{"PUT", "/latest/api/token", map[string]string{"X-metadata-token-ttl-seconds": "0"}, 400},
		{"PUT", "/latest/api/token", map[string]string{"X-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "1.2.3.4"}, 400},
		{"GET", "/latest/api/token", nil, 405},
		{"GET", "/", nil, 401},
		{"GET", "/", map[string]string{"X-metadata-token": "forged"}, 401},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s %v = %d, want %d", tc.method, tc.path, tc.hdr, resp.StatusCode, tc.want)
		}
	}
}

func TestGetErrors(t *testing.T) {
	for name, h := range map[string]http.HandlerFunc{
		"empty token": func(w http.ResponseWriter, r *http.Request) {},
		"401 on get": func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut {
				io.WriteString(w, "tok")
				return
			}
			http.Error(w, "no token", http.StatusUnauthorized)
		},
		"not json": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "instanceID\nenvID\n")
		},
		"500 on token": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			defer srv.Close()
			c := &Client{BaseURL: srv.URL, HTTP: http.DefaultClient}
			if md, err := c.Get(context.Background()); err == nil {
				t.Errorf("Get succeeded: %+v", md)
			}
		})
	}
	c := &Client{BaseURL: "http://127.0.0.1:1", HTTP: &http.Client{Timeout: time.Second}}
	if _, err := c.Get(context.Background()); err == nil {
		t.Error("Get against a closed port succeeded")
	}
}

func readFile(t *testing.T, path string) (string, os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), fi.Mode().Perm()
}

func TestPollAppliesEnvAndFiles(t *testing.T) {
	fake, srv := newFake(t, map[string]any{"instanceID": "sbx-1", "envID": "tmpl-1"})
	fake.FailNext(3)
	run := t.TempDir()
	env := execenv.NewEnv("")
	s := &Service{Client: &Client{BaseURL: srv.URL, HTTP: http.DefaultClient}, Env: env, RunDir: run, Log: discard()}
	if err := s.WriteMode(true); err != nil {
		t.Fatal(err)
	}
	md, err := s.Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if md.InstanceID != "sbx-1" || s.Last() != md {
		t.Fatalf("Poll = %+v, Last = %+v", md, s.Last())
	}
	vars := env.Snapshot().Vars
	for k, v := range map[string]string{
		"WRENN_SANDBOX": "true", "E2B_SANDBOX": "true",
		"WRENN_SANDBOX_ID": "sbx-1", "E2B_SANDBOX_ID": "sbx-1",
		"WRENN_TEMPLATE_ID": "tmpl-1", "E2B_TEMPLATE_ID": "tmpl-1",
	} {
		if vars[k] != v {
			t.Errorf("env %s = %q, want %q", k, vars[k], v)
		}
	}
	for _, f := range []struct {
		path, val string
		mode      os.FileMode
	}{
		{"wrenn/.WRENN_SANDBOX", "true", 0o444},
		{"e2b/.E2B_SANDBOX", "true", 0o444},
		{"wrenn/.WRENN_SANDBOX_ID", "sbx-1", 0o666},
		{"e2b/.E2B_SANDBOX_ID", "sbx-1", 0o666},
		{"wrenn/.WRENN_TEMPLATE_ID", "tmpl-1", 0o666},
		{"e2b/.E2B_TEMPLATE_ID", "tmpl-1", 0o666},
	} {
		val, mode := readFile(t, filepath.Join(run, f.path))
		if val != f.val || mode != f.mode {
			t.Errorf("%s = %q %v, want %q %v", f.path, val, mode, f.val, f.mode)
		}
	}
	for _, dir := range []string{"wrenn", "e2b"} {
		entries, _ := os.ReadDir(filepath.Join(run, dir))
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp") {
				t.Errorf("temporary file left: %s/%s", dir, e.Name())
			}
		}
	}
	// /init cannot override the internal keys.
	env.ReplaceVars(map[string]string{"WRENN_SANDBOX_ID": "forged"})
	if got := env.Snapshot().Vars["WRENN_SANDBOX_ID"]; got != "sbx-1" {
		t.Errorf("WRENN_SANDBOX_ID overridden to %q", got)
	}
}

func TestRepollPicksUpNewID(t *testing.T) {
	fake, srv := newFake(t, map[string]any{"instanceID": "sbx-1", "envID": "tmpl-1"})
	run := t.TempDir()
	env := execenv.NewEnv("")
	s := &Service{Client: &Client{BaseURL: srv.URL, HTTP: http.DefaultClient}, Env: env, RunDir: run, Log: discard()}
	if _, err := s.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A restored snapshot: new sandbox id, and no envID key this time.
	fake.Set(map[string]any{"instanceID": "sbx-2"})
	<-s.Repoll(context.Background())
	if got := env.Snapshot().Vars["WRENN_SANDBOX_ID"]; got != "sbx-2" {
		t.Errorf("WRENN_SANDBOX_ID = %q after re-poll, want sbx-2", got)
	}
	if got, _ := readFile(t, filepath.Join(run, "wrenn/.WRENN_TEMPLATE_ID")); got != "tmpl-1" {
		t.Errorf("template id file = %q; an absent key must keep the last one", got)
	}
}

func TestPollStopsWithContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	s := &Service{Client: &Client{BaseURL: srv.URL, HTTP: http.DefaultClient}, Env: execenv.NewEnv(""), RunDir: t.TempDir(), Log: discard()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Poll(ctx)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Poll after cancel = %v, want context.Canceled", err)
	}
	// A replaced re-poll ends too.
	first := s.Repoll(context.Background())
	second := s.Repoll(context.Background())
	<-first
	s.Stop()
	<-second
}

func TestWriteFileFailsClearly(t *testing.T) {
	run := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(run, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Service{Env: execenv.NewEnv(""), RunDir: run, Log: discard()}
	if err := s.Apply(Metadata{InstanceID: "x"}); err == nil || !strings.Contains(err.Error(), "env file") {
		t.Errorf("Apply under a file = %v, want an env file error", err)
	}
}
