package daemon

import (
	"net/http"
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
// Middleware, outermost first: CORS, access token, Basic-auth user.
func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()

	health := &httpapi.Health{Version: d.build.Version}
	mux.Handle("GET /health", d.recoverAfterRestore(health))

	files := &httpapi.Files{Env: d.env, Token: d.token, Now: time.Now, Log: d.log}
	mux.Handle("GET /files", files.Download())
	mux.Handle("POST /files", files.Upload())
	mux.Handle("POST /init", d.recoverAfterRestore(d.initAPI))
	mux.Handle("GET /metrics", d.metricsAPI)
	mux.Handle("GET /envs", &httpapi.Envs{Env: d.env})
	mux.Handle("POST /snapshot/prepare", d.snapshotAPI)

	mux.Handle(processconnect.NewProcessHandler(processapi.New(d.procs, d.env, d.log), processapi.HandlerOptions()...))
	mux.Handle(filesystemconnect.NewFilesystemHandler(d.fs, fsapi.HandlerOptions()...))
	mux.Handle(envdv1connect.NewOutputHandler(envdapi.NewOutput(d.procs), envdapi.HandlerOptions()...))
	mux.Handle(envdv1connect.NewExitsHandler(envdapi.NewExits(d.procs), envdapi.HandlerOptions()...))
	mux.Handle(envdv1connect.NewPortsHandler(envdapi.NewPorts(d.ports), envdapi.HandlerOptions()...))

	return withCORS(auth.RequireToken(d.token, auth.BasicUser(d.env, mux)))
}
