package daemon

import (
	"net/http"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/httpapi"
)

// routes is THE table of every HTTP route and Connect service envd serves.
// Middleware, outermost first: CORS, access token, Basic-auth user.
func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()

	health := &httpapi.Health{Version: d.build.Version}
	mux.Handle("GET /health", health)

	return withCORS(auth.RequireToken(d.token, auth.BasicUser(mux)))
}
