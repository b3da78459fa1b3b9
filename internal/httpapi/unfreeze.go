package httpapi

import (
	"log/slog"
	"net/http"

	"github.com/envd-dev/envd/internal/freeze"
)

// Unfreeze serves POST /unfreeze (§18.2): the orchestrator's rollback after
// a failed pause and its in-place checkpoint resume. The thaw never gives up
// waiting, so there is no 503; any thaw error is a 500.
type Unfreeze struct {
	Freezer *freeze.Freezer
	Log     *slog.Logger
}

func (h *Unfreeze) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	handler{h.serve, h.Log}.ServeHTTP(w, r)
}

func (h *Unfreeze) serve(w http.ResponseWriter, r *http.Request) error {
	if err := h.Freezer.Thaw(r.Context()); err != nil {
		return errorf(http.StatusInternalServerError, "unfreeze: %w", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}
