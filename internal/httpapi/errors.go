package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"syscall"

	"github.com/envd-dev/envd/internal/auth"
)

// bodyKind is how an error is written: the REST JSON shape of §5, bare text
// (/init, query-parameter format errors) or nothing (/metrics).
type bodyKind int

const (
	jsonBody bodyKind = iota
	plainBody
	emptyBody
)

// apiError carries the status and the client-facing message of a failure.
type apiError struct {
	status int
	msg    string
	kind   bodyKind
	err    error // cause, for logs
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.err }

func errorf(status int, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &apiError{status: status, msg: err.Error(), err: errors.Unwrap(err)}
}

func plainError(status int, msg string) error {
	return &apiError{status: status, msg: msg, kind: plainBody}
}

// isNoSpace reports the errors §7.7 maps to 507.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// handler lets endpoint code return errors; writeError is the one place that
// turns them into responses.
type handler struct {
	fn  func(http.ResponseWriter, *http.Request) error
	log *slog.Logger
}

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.fn(w, r); err != nil {
		writeError(w, r, h.log, err)
	}
}

func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	ae := &apiError{status: http.StatusInternalServerError, msg: err.Error()}
	errors.As(err, &ae)
	if log != nil && ae.status >= 500 {
		log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", ae.status, "err", err)
	}
	// A streamed error header must not claim the encoding of a body that never came.
	w.Header().Del("Content-Encoding")
	w.Header().Del("Content-Disposition")
	switch ae.kind {
	case plainBody:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(ae.status)
		fmt.Fprint(w, ae.msg)
	case emptyBody:
		w.WriteHeader(ae.status)
	default:
		auth.WriteJSONError(w, ae.status, ae.msg)
	}
}
