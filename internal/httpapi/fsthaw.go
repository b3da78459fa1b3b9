package httpapi

import (
	"log/slog"
	"net/http"

	"github.com/envd-dev/envd/internal/fsfreeze"
)

// FSThaw serves POST /fsthaw (§18.3), the rollback of /fsfreeze. Nothing on
// this path may write to the rootfs, which is frozen: errors go to the log
// (stderr, or the host's log collector) and the response only.
type FSThaw struct {
	FS  *fsfreeze.FS
	Log *slog.Logger
}

func (h *FSThaw) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	handler{h.serve, h.Log}.ServeHTTP(w, r)
}

func (h *FSThaw) serve(w http.ResponseWriter, r *http.Request) error {
	if err := h.FS.Thaw(r.Context()); err != nil {
		return errorf(http.StatusInternalServerError, "%w", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}
