package daemon

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/envdapi"
	"github.com/envd-dev/envd/internal/fsapi"
	"github.com/envd-dev/envd/internal/gen/envd/v1/envdv1connect"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
	"github.com/envd-dev/envd/internal/httpapi"
	"github.com/envd-dev/envd/internal/processapi"
)

// routes is THE table of every HTTP route and Connect service envd serves.
// Middleware, outermost first: CORS, access token, Basic-auth user. Every
// route needs the access token once one is set, unless declared public(…)
// here (§6.1: /files checks its own header-or-signature, /init authenticates
// itself).
func (d *Daemon) routes() http.Handler {
	mux := newRouteTable()

	health := &httpapi.Health{Version: d.build.Version}
	mux.Handle("GET /health", public(d.recoverAfterRestore(health)))

	files := &httpapi.Files{Env: d.env, Token: d.token, Now: time.Now, Log: d.log, Writer: d.writer}
	mux.Handle("GET /files", public(files.Download()))
	mux.Handle("POST /files", public(files.Upload()))
	mux.Handle("POST /files/compose", &httpapi.Compose{Env: d.env, Log: d.log})
	mux.Handle("POST /init", public(d.recoverAfterRestore(d.initAPI)))
	mux.Handle("GET /metrics", d.metricsAPI)
	mux.Handle("GET /envs", &httpapi.Envs{Env: d.env})
	mux.Handle("POST /snapshot/prepare", d.snapshotAPI)
	mux.Handle("POST /freeze", &httpapi.Freeze{Freezer: d.orch.freezer, Log: d.log})
	mux.Handle("POST /unfreeze", &httpapi.Unfreeze{Freezer: d.orch.freezer, Log: d.log})
	mux.Handle("POST /fsfreeze", &httpapi.FSFreeze{FS: d.orch.fs, Log: d.log})
	mux.Handle("POST /fsthaw", &httpapi.FSThaw{FS: d.orch.fs, Log: d.log})
	mux.Handle("POST /collapse", &httpapi.Collapse{Collapser: d.orch.collapse, Log: d.log})
	mux.Handle("POST /upgrade", d.upgradeAPI())

	mux.Handle(checkedBodies(processapi.Wrap(processconnect.NewProcessHandler(processapi.New(d.procs, d.env, d.log), processapi.HandlerOptions()...))))
	mux.Handle(checkedBodies(filesystemconnect.NewFilesystemHandler(d.fs, fsapi.HandlerOptions()...)))
	mux.Handle(checkedBodies(envdv1connect.NewOutputHandler(envdapi.NewOutput(d.procs), envdapi.HandlerOptions()...)))
	mux.Handle(checkedBodies(envdv1connect.NewExitsHandler(envdapi.NewExits(d.procs), envdapi.HandlerOptions()...)))
	mux.Handle(checkedBodies(envdv1connect.NewPortsHandler(envdapi.NewPorts(d.ports), envdapi.HandlerOptions()...)))

	return withCORS(auth.RequireToken(d.token, mux.isPublic, httpapi.HandoverGate(d.upg.life, auth.BasicUser(d.env, mux))))
}

// publicHandler marks a route that never needs the access token.
type publicHandler struct{ http.Handler }

// public declares the route it wraps exempt from the access token.
func public(h http.Handler) http.Handler { return publicHandler{h} }

// routeTable is a ServeMux that also records which routes are public.
type routeTable struct {
	*http.ServeMux
	public map[string]bool // "METHOD /path" exactly as the request line has them
}

func newRouteTable() *routeTable {
	return &routeTable{ServeMux: http.NewServeMux(), public: map[string]bool{}}
}

// Handle registers h; a public(…) handler must be one method on one exact
// path, since the token check matches the request's method and path before
// any routing (a wildcard or subtree would widen the exemption silently).
func (t *routeTable) Handle(pattern string, h http.Handler) {
	if p, ok := h.(publicHandler); ok {
		method, path, _ := strings.Cut(pattern, " ")
		if method == "" || !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "{} ") || (path != "/" && strings.HasSuffix(path, "/")) {
			panic(fmt.Sprintf("public route %q must be METHOD and one exact path", pattern))
		}
		t.public[pattern] = true
		h = p.Handler
	}
	t.ServeMux.Handle(pattern, h)
}

func (t *routeTable) isPublic(r *http.Request) bool {
	return t.public[r.Method+" "+r.URL.Path]
}
