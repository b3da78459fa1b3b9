package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os/user"
	"path/filepath"

	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/fsops"
)

// Compose serves POST /files/compose (§7.8, §18.5): concatenate files into
// one, atomically, and remove the parts. It needs the access token like any
// route but /files and /init (no signed URLs).
type Compose struct {
	Env *execenv.Env
	Log *slog.Logger
}

func (c *Compose) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	handler{c.serve, c.Log}.ServeHTTP(w, r)
}

type composeRequest struct {
	SourcePaths []string `json:"source_paths"`
	Destination string   `json:"destination"`
	// nil: the default user; "" is looked up as a name, and fails.
	Username *string `json:"username"`
}

// composeResult has exactly E2B's keys: no metadata.
type composeResult struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// maxComposeBody bounds the JSON body: thousands of paths, not file data.
const maxComposeBody = 4 << 20

// serve validates in §18.5's order, so each bad request gets the answer
// E2B's envd gives it.
func (c *Compose) serve(w http.ResponseWriter, r *http.Request) error {
	var req composeRequest
	// A streaming decoder, as E2B's: unknown keys and trailing data ignored.
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxComposeBody)).Decode(&req); err != nil {
		return errorf(http.StatusBadRequest, "invalid request body: %w", err)
	}
	if len(req.SourcePaths) == 0 {
		return errorf(http.StatusBadRequest, "source_paths must not be empty")
	}
	if req.Destination == "" {
		return errorf(http.StatusBadRequest, "destination is required")
	}
	name := c.Env.Snapshot().User
	if req.Username != nil {
		name = *req.Username
	}
	u, err := c.Env.LookupUser(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			err = unknown
		}
		return errorf(http.StatusUnauthorized, "error looking up user '%s': %v", name, err)
	}
	dest, err := c.resolve(req.Destination, u)
	if err != nil {
		return errorf(http.StatusBadRequest, "error resolving destination path: %w", err)
	}
	sources := make([]string, len(req.SourcePaths))
	for i, src := range req.SourcePaths {
		p, err := c.resolve(src, u)
		if err != nil {
			return errorf(http.StatusBadRequest, "error resolving source path: %w", err)
		}
		if p == dest {
			return errorf(http.StatusBadRequest, "source path %q cannot be the same as destination", src)
		}
		if err := fsops.CheckComposeSource(p); err != nil {
			return composeError(err, src)
		}
		sources[i] = p
	}
	if err := fsops.Compose(sources, dest, u.UID, u.GID); err != nil {
		return composeError(err, "")
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(composeResult{Path: dest, Name: filepath.Base(dest), Type: "file"})
}

// resolve cleans the path as E2B's filepath.Abs does: the same-as-destination
// check is lexical, and "dir/./dest" must not pass it, be read into the
// result and then be removed as a source — taking the result with it.
func (c *Compose) resolve(p string, u *execenv.User) (string, error) {
	resolved, err := execenv.Resolve(p, u.Home, c.Env.Snapshot().Workdir)
	if err == nil {
		err = fsops.ValidatePath(resolved)
	}
	return filepath.Clean(resolved), err
}

// composeError maps fsops' compose errors; src is the source as given.
func composeError(err error, src string) error {
	switch {
	case errors.Is(err, fsops.ErrSourceMissing):
		return &apiError{status: http.StatusNotFound, msg: "source file not found: " + src, err: err}
	case errors.Is(err, fsops.ErrSourceNotRegular):
		return &apiError{status: http.StatusBadRequest, msg: "source path is not a regular file: " + src, err: err}
	case fsops.IsNoSpace(err):
		return &apiError{status: http.StatusInsufficientStorage, msg: "not enough disk space available", err: err}
	}
	return &apiError{status: http.StatusInternalServerError, msg: fmt.Sprint(err), err: err}
}
