package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/envd-dev/envd/internal/execenv"
)

// Envs serves GET /envs (§7.3): the default environment merged into every
// process, internal keys included.
type Envs struct {
	Env *execenv.Env
}

func (h *Envs) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(h.Env.Snapshot().Vars)
}
