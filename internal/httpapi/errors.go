package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"syscall"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/fsops"
)

// bodyKind is how an error is written: the REST JSON shape of §5, bare text
// (/init, query-parameter format errors) or nothing (/metrics).
type bodyKind int

const (
	jsonBody bodyKind = iota
	plainBody
	emptyBody
)

// The kinds of request fault /files finds itself; statusOf maps them, and
// the domain errors of fsops and the OS, to a status.
var (
	errBadRequest    = errors.New("bad request")
	errUnauthorized  = errors.New("unauthorized")
	errNotAcceptable = errors.New("not acceptable")
	errNotFound      = errors.New("not found")
)

// fault is a failure whose message is the one the client is shown and whose
// kind (or cause) statusOf maps to a status.
type fault struct {
	msg  string
	kind error
	err  error // cause, for logs and for statusOf
	body bodyKind
}

func (e *fault) Error() string { return e.msg }

func (e *fault) Unwrap() []error {
	var out []error
	for _, err := range []error{e.kind, e.err} {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

func fail(kind error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &fault{msg: err.Error(), kind: kind, err: errors.Unwrap(err)}
}

// because is fail with a cause statusOf looks at but the message leaves out.
func because(cause, kind error, format string, args ...any) error {
	return &fault{msg: fmt.Sprintf(format, args...), kind: kind, err: cause}
}

// apiError carries a status its endpoint chose itself (/init, /metrics).
type apiError struct {
	status int
	msg    string
	kind   bodyKind
	err    error // cause, for logs
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.err }

// errorf is an apiError whose status the endpoint chose, for the §18
// endpoints whose codes the spec fixes per step.
func errorf(status int, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &apiError{status: status, msg: err.Error(), err: errors.Unwrap(err)}
}

func plainError(status int, msg string) error {
	return &apiError{status: status, msg: msg, kind: plainBody}
}

// statusOf is the one place /files errors become HTTP statuses.
func statusOf(err error) int {
	if ae := new(apiError); errors.As(err, &ae) {
		return ae.status
	}
	switch {
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, errNotAcceptable):
		return http.StatusNotAcceptable
	// A symlink loop or a file where a directory must be is the path the
	// client chose, not a fault of the server.
	case errors.Is(err, errBadRequest), errors.Is(err, fsops.ErrSource),
		errors.Is(err, fsops.ErrIsDir), errors.Is(err, fsops.ErrNotRegular),
		errors.Is(err, fsops.ErrNotDir), errors.Is(err, syscall.ELOOP):
		return http.StatusBadRequest
	case fsops.IsNoSpace(err):
		return http.StatusInsufficientStorage
	// Not fs.ErrNotExist: a file or directory vanishing in the middle of
	// an upload is the server's 500, only a download of a missing path 404.
	case errors.Is(err, errNotFound):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

// shapeOf is the message and body kind of the outermost fault or apiError
// in err's chain, else err's own text as JSON.
func shapeOf(err error) (string, bodyKind) {
	for e := err; e != nil; {
		switch t := e.(type) {
		case *apiError:
			return t.msg, t.kind
		case *fault:
			return t.msg, t.body
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return err.Error(), jsonBody
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
	status := statusOf(err)
	msg, body := shapeOf(err)
	if log != nil && status >= 500 {
		log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	// A streamed error header must not claim the encoding of a body that never came.
	w.Header().Del("Content-Encoding")
	w.Header().Del("Content-Disposition")
	switch body {
	case plainBody:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(status)
		fmt.Fprint(w, msg)
	case emptyBody:
		w.WriteHeader(status)
	default:
		auth.WriteJSONError(w, status, msg)
	}
}
