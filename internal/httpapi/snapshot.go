package httpapi

import (
	"context"
	"net/http"
)

// SnapshotPrepare serves POST /snapshot/prepare (§7.5): the host agent calls
// it right before pausing the VM, with a 3 s timeout, and expects 204.
type SnapshotPrepare struct {
	// Quiesce hooks run in order (stop port forwarding, drop caches, ...).
	// They get the request's context: a host agent that gave up has paused
	// the VM anyway, so there is no point finishing.
	Quiesce []func(ctx context.Context)
}

func (h *SnapshotPrepare) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, q := range h.Quiesce {
		q(r.Context())
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
