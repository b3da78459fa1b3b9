package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/envd-dev/envd/internal/sysstat"
)

// Metrics serves GET /metrics (§7.2): 500 with an empty body when any
// figure cannot be read, as the existing envds answer.
type Metrics struct {
	Sampler *sysstat.Sampler
	Log     *slog.Logger
}

func (h *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	handler{h.serve, h.Log}.ServeHTTP(w, r)
}

func (h *Metrics) serve(w http.ResponseWriter, _ *http.Request) error {
	m, err := h.Sampler.Sample()
	if err != nil {
		return &apiError{status: http.StatusInternalServerError, kind: emptyBody, msg: "collect metrics", err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(m)
}
