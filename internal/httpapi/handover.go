package httpapi

import (
	"net/http"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/upgrade"
)

// HandoverGate wraps every route of an envd that may have been started by
// a live upgrade (§6.1, §18.1): until the first successful /init only
// GET /health and POST /init pass, and every /init answer carries
// X-Envd-Handover. On a normal boot it only passes requests through.
func HandoverGate(life *upgrade.Lifecycle, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		isInit := r.Method == http.MethodPost && r.URL.Path == "/init"
		if isInit {
			if v, ok := life.HandoverHeader(); ok {
				w.Header().Set("X-Envd-Handover", v)
			}
		}
		if !isInit && !(r.Method == http.MethodGet && r.URL.Path == "/health") && life.Gated() {
			auth.WriteJSONError(w, http.StatusUnauthorized, "envd not initialized")
			return
		}
		next.ServeHTTP(w, r)
	})
}
