package httpapi

import (
	"log/slog"
	"net/http"

	"github.com/envd-dev/envd/internal/upgrade"
)

// Upgrade serves POST /upgrade (§18.1): stage the body as the new binary,
// then hand over to it. Success has no response: the process image is
// replaced and the connection closes. Errors are Go http.Error text.
type Upgrade struct {
	Life     *upgrade.Lifecycle
	Upgrader *upgrade.Upgrader
	// StagePath is where the body is written: upgrade.StagePath in a VM;
	// tests point it elsewhere, the header still has to name the real one.
	StagePath string
	// SelfExe is the running binary, the target of an empty body.
	SelfExe string
	Log     *slog.Logger
}

func (h *Upgrade) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	handler{h.serve, h.Log}.ServeHTTP(w, r)
}

func (h *Upgrade) serve(w http.ResponseWriter, r *http.Request) error {
	if !h.Life.IsInitialized() {
		return upgradeError(http.StatusConflict, "envd not initialized")
	}
	if bin := r.Header.Get("X-Envd-Upgrade-Bin"); bin != "" && bin != upgrade.StagePath {
		return upgradeError(http.StatusBadRequest, "unsupported upgrade target")
	}
	target := h.SelfExe
	if r.ContentLength != 0 {
		if err := upgrade.Stage(h.StagePath, r.Body); err != nil {
			return upgradeError(http.StatusInternalServerError, err.Error())
		}
		target = h.StagePath
	}
	if err := h.Upgrader.Upgrade(target); err != nil {
		return upgradeError(http.StatusInternalServerError, err.Error())
	}
	return nil // unreachable on success: the image was replaced
}

// upgradeError is Go's http.Error shape, which E2B's /upgrade answers with.
func upgradeError(status int, msg string) error {
	return plainError(status, msg+"\n")
}
