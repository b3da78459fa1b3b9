package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/envd-dev/envd/internal/freeze"
)

// Freeze serves POST /freeze (§18.2): the orchestrator freezes the workload
// right before a pause. Failures of single cgroups are counted in the
// result, never turned into an error status.
type Freeze struct {
	Freezer *freeze.Freezer
	Log     *slog.Logger
}

// freezeResult is the FreezeResult body; every key is always present.
type freezeResult struct {
	Mode         freeze.Mode `json:"mode"`
	Visited      int         `json:"visited"`
	Allowlisted  int         `json:"allowlisted"`
	Truncated    bool        `json:"truncated"`
	PreFrozen    int         `json:"preFrozen"`
	Requested    int         `json:"requested"`
	Frozen       int         `json:"frozen"`
	NotFrozen    int         `json:"notFrozen"`
	Failed       int         `json:"failed"`
	Unobservable int         `json:"unobservable"`
	SweepMs      int64       `json:"sweepMs"`
	WaitMs       int64       `json:"waitMs"`
}

func (h *Freeze) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	handler{h.serve, h.Log}.ServeHTTP(w, r)
}

func (h *Freeze) serve(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var o freeze.Options
	if q.Get("mode") == string(freeze.Hierarchy) {
		o.Mode = freeze.Hierarchy // anything else is legacy, unvalidated, as in EG
	}
	if v := q.Get("maxCgroups"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return plainError(http.StatusBadRequest, "Invalid format for parameter maxCgroups: "+err.Error())
		}
		o.MaxCgroups = n
	}
	if v := q.Get("maxWaitMs"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return plainError(http.StatusBadRequest, "Invalid format for parameter maxWaitMs: "+err.Error())
		}
		if n > 0 {
			o.MaxWait = time.Duration(min(n, int64(time.Duration(1<<62)/time.Millisecond))) * time.Millisecond
		}
	}
	res, err := h.Freezer.Freeze(r.Context(), o)
	if errors.Is(err, freeze.ErrLockTimeout) || errors.Is(err, freeze.ErrWaitCancelled) {
		return &apiError{status: http.StatusServiceUnavailable, msg: err.Error(), kind: emptyBody, err: err}
	}
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	if o.MaxWait <= 0 {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	return json.NewEncoder(w).Encode(freezeResult{
		Mode: res.Mode, Visited: res.Visited, Allowlisted: res.Allowlisted, Truncated: res.Truncated,
		PreFrozen: res.PreFrozen, Requested: res.Requested, Frozen: res.Frozen, NotFrozen: res.NotFrozen,
		Failed: res.Failed, Unobservable: res.Unobservable,
		SweepMs: res.SweepTime.Milliseconds(), WaitMs: res.WaitTime.Milliseconds(),
	})
}

// InitThaw is the /init side of §18.2, for Init.OnAuthorized: once the token
// is validated it adds X-Envd-Freeze-Audit after a hierarchy freeze, and
// returns the thaw, which /init defers to its end so that the 204 leaves
// only once the workload runs again. Thaw errors are only logged.
func InitThaw(f *freeze.Freezer, log *slog.Logger) func(r *http.Request, hdr http.Header) func() {
	return func(r *http.Request, hdr http.Header) func() {
		if a, ok := f.Audit(); ok {
			if b, err := json.Marshal(a); err == nil {
				hdr.Set("X-Envd-Freeze-Audit", string(b))
			}
		}
		return func() {
			if err := f.Thaw(r.Context()); err != nil {
				log.Warn("thaw after /init", "err", err)
			}
		}
	}
}
