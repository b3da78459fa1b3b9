package httpapi_test

import (
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/envd-dev/envd/internal/upgrade"
)

// POST /upgrade's refusals (§18.1 handler order), each leaving the daemon
// healthy. What follows them (staging, the swap) runs against the real
// binary in namespaces: internal/upgrade's live tests.
func TestUpgradeRefusals(t *testing.T) {
	c := start(t)
	hdr := []string{"X-Envd-Upgrade-Bin", upgrade.StagePath}
	wantText := func(resp *http.Response, body []byte, status int, msg string) {
		t.Helper()
		if resp.StatusCode != status || string(body) != msg+"\n" ||
			resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("got %d %q (%s), want %d %q", resp.StatusCode, body, resp.Header.Get("Content-Type"), status, msg)
		}
	}

	// 1. Before any /init, whatever the header.
	resp, body := c.do("POST", "/upgrade", strings.NewReader("binary"), hdr...)
	wantText(resp, body, http.StatusConflict, "envd not initialized")
	resp, body = c.do("POST", "/upgrade", strings.NewReader("binary"), "X-Envd-Upgrade-Bin", "/elsewhere")
	wantText(resp, body, http.StatusConflict, "envd not initialized")
	if resp.Header.Get("X-Envd-Handover") != "" {
		t.Fatal("X-Envd-Handover outside /init")
	}

	c.init(`{"accessToken":"secret"}`)
	// Auth: the token is required like on every control route.
	resp, body = c.do("POST", "/upgrade", strings.NewReader("binary"), hdr...)
	wantJSONError(t, resp, body, http.StatusUnauthorized, "unauthorized access, please provide a valid access token or method signing if supported")
	resp, body = c.do("POST", "/upgrade", strings.NewReader("binary"), append(hdr, "X-Access-Token", "wrong")...)
	wantJSONError(t, resp, body, http.StatusUnauthorized, "")

	// 2. Any target but the fixed one.
	for _, target := range []string{"/usr/bin/envd", "/usr/bin/envd.next/", "usr/bin/envd.next", "/tmp/envd.next"} {
		resp, body = c.do("POST", "/upgrade", strings.NewReader("binary"), "X-Envd-Upgrade-Bin", target, "X-Access-Token", "secret")
		wantText(resp, body, http.StatusBadRequest, "unsupported upgrade target")
	}
	if _, err := os.Stat(upgrade.StagePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused upgrade staged a file: %v", err)
	}

	// /init on a normal boot carries no handover report.
	resp, _ = c.do("POST", "/init", strings.NewReader(`{"accessToken":"secret"}`))
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("X-Envd-Handover") != "" {
		t.Fatalf("/init: %d, X-Envd-Handover %q", resp.StatusCode, resp.Header.Get("X-Envd-Handover"))
	}
	if resp, body := c.do("GET", "/health", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("health after the refusals: %d %s", resp.StatusCode, body)
	}
}
