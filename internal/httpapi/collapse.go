package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/envd-dev/envd/internal/memcollapse"
)

// Collapse serves POST /collapse (§18.4): compacts envd's anonymous memory
// into hugepages before a pause. No lock: repeated calls find it done.
type Collapse struct {
	Collapser *memcollapse.Collapser
	Log       *slog.Logger
}

type collapseResult struct {
	Regions     int   `json:"regions"`
	Chunks      int   `json:"chunks"`
	Collapsed   int   `json:"collapsed"`
	AlreadyHuge int   `json:"alreadyHuge"`
	Skipped     int   `json:"skipped"`
	ElapsedMs   int64 `json:"elapsedMs"`
}

func (h *Collapse) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	handler{h.serve, h.Log}.ServeHTTP(w, r)
}

func (h *Collapse) serve(w http.ResponseWriter, r *http.Request) error {
	res, err := h.Collapser.Collapse(r.Context())
	if err != nil {
		return errorf(http.StatusInternalServerError, "collapse: %w", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	return json.NewEncoder(w).Encode(collapseResult{
		Regions: res.Regions, Chunks: res.Chunks, Collapsed: res.Collapsed,
		AlreadyHuge: res.AlreadyHuge, Skipped: res.Skipped, ElapsedMs: res.Elapsed.Milliseconds(),
	})
}
