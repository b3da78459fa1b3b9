package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/upgrade"
)

// After a handover boot: only GET /health and POST /init pass until an
// /init succeeds, and every /init answer, refusals included, carries the
// report.
func TestHandoverGate(t *testing.T) {
	life := &upgrade.Lifecycle{}
	life.Resumed(upgrade.Report{Failed: true}, nil, true, time.Hour)
	tok := &auth.Token{}
	tok.Set("secret") // as if an old token survived; /init must present it
	init := NewInit(execenv.NewEnv(os.Getenv("PATH")), tok, "0.7.0", slog.New(slog.DiscardHandler))
	init.AfterInit = func(context.Context) { life.Initialized() }
	mux := http.NewServeMux()
	mux.Handle("POST /init", init)
	mux.Handle("GET /health", &Health{Version: "0.7.0"})
	mux.Handle("GET /envs", &Envs{Env: init.Env})
	h := HandoverGate(life, mux)
	do := func(method, path, body string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(body)))
		return w
	}
	const report = `{"failed":true,"procs":0,"procs_failed":0,"retained":0,"retained_failed":0,"watchers":0,"watchers_failed":0}`

	if w := do("GET", "/envs", ""); w.Code != http.StatusUnauthorized || w.Body.String() != `{"code":401,"message":"envd not initialized"}`+"\n" {
		t.Fatalf("/envs before /init: %d %q", w.Code, w.Body)
	}
	if w := do("POST", "/health", ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("POST /health before /init: %d", w.Code)
	}
	if w := do("GET", "/health", ""); w.Code != http.StatusOK || w.Header().Get("X-Envd-Handover") != "" {
		t.Fatalf("/health before /init: %d %v", w.Code, w.Header())
	}
	for _, body := range []string{`{"accessToken":"wrong"}`, `{not json`} {
		w := do("POST", "/init", body)
		if w.Code/100 != 4 || w.Header().Get("X-Envd-Handover") != report {
			t.Fatalf("/init %s: %d, X-Envd-Handover %q", body, w.Code, w.Header().Get("X-Envd-Handover"))
		}
		if !life.Gated() {
			t.Fatalf("a failed /init (%s) opened the gate", body)
		}
	}
	if w := do("POST", "/init", `{"accessToken":"secret"}`); w.Code != http.StatusNoContent || w.Header().Get("X-Envd-Handover") != report {
		t.Fatalf("/init: %d %q", w.Code, w.Header().Get("X-Envd-Handover"))
	}
	if w := do("GET", "/envs", ""); w.Code != http.StatusOK {
		t.Fatalf("/envs after /init: %d %q", w.Code, w.Body)
	}
}

// A normal boot: no gate, no header.
func TestHandoverGateNormalBoot(t *testing.T) {
	life := &upgrade.Lifecycle{}
	h := HandoverGate(life, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	for _, path := range []string{"/envs", "/init"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("POST", path, nil))
		if w.Code != http.StatusTeapot || w.Header().Get("X-Envd-Handover") != "" {
			t.Fatalf("%s: %d %v", path, w.Code, w.Header())
		}
	}
}
