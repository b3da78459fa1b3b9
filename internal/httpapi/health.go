// Package httpapi serves envd's plain HTTP endpoints (§7): /health, /files,
// /init, /metrics, /envs and /snapshot/prepare. Each handler is a small type
// holding exactly the components it needs.
package httpapi

import (
	"encoding/json"
	"net/http"
)

// Health answers 200 with the version: the Wrenn host agent accepts nothing
// else, and the SDKs accept any 2xx.
type Health struct {
	Version string
}

func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(struct {
		Version string `json:"version"`
	}{h.Version})
}
