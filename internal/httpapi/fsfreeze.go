package httpapi

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/envd-dev/envd/internal/fsfreeze"
)

// FSFreeze serves POST /fsfreeze (§18.3): the orchestrator quiesces the
// rootfs before a filesystem-only pause and fails the pause on anything
// but 204.
type FSFreeze struct {
	FS  *fsfreeze.FS
	Log *slog.Logger
}

func (h *FSFreeze) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	handler{h.serve, h.Log}.ServeHTTP(w, r)
}

func (h *FSFreeze) serve(w http.ResponseWriter, r *http.Request) error {
	err := h.FS.Freeze(r.Context())
	if errors.Is(err, fsfreeze.ErrLockTimeout) {
		return &apiError{status: http.StatusServiceUnavailable, msg: err.Error(), kind: emptyBody, err: err}
	}
	if err != nil {
		return errorf(http.StatusInternalServerError, "%w", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}
