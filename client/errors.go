package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// Kinds of failure. Every error returned by a Client method for something envd
// answered is an *Error matching exactly one of these with errors.Is.
var (
	ErrNotFound            = errors.New("not found")
	ErrAlreadyExists       = errors.New("already exists")
	ErrInvalidArgument     = errors.New("invalid argument")
	ErrUnauthenticated     = errors.New("unauthenticated")
	ErrPermission          = errors.New("permission denied")
	ErrFailedPrecondition  = errors.New("failed precondition")
	ErrNotEnoughSpace      = errors.New("not enough space")
	ErrUnavailable         = errors.New("unavailable")
	ErrUnimplemented       = errors.New("unimplemented")
	ErrCanceled            = errors.New("canceled")
	ErrDeadlineExceeded    = errors.New("deadline exceeded")
	ErrNotAcceptable       = errors.New("not acceptable")
	ErrRangeNotSatisfiable = errors.New("range not satisfiable")
	ErrInternal            = errors.New("internal error")
)

// Error is a failure envd reported (or a stream that died). Kind is one of the
// Err… values; Status is the HTTP status for plain-HTTP endpoints (0 for
// RPCs), Code the Connect code for RPCs (0 for plain HTTP).
type Error struct {
	Op      string // e.g. "process.Start", "GET /files"
	Kind    error
	Status  int
	Code    connect.Code
	Message string // envd's message, for people; never needed to decide anything
	cause   error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("envd %s: %v", e.Op, e.Kind)
	}
	return fmt.Sprintf("envd %s: %v: %s", e.Op, e.Kind, e.Message)
}

// Unwrap lets errors.Is match the kind, and the context error when the call
// ended because its context did.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Kind, e.cause}
	}
	return []error{e.Kind}
}

var codeKinds = map[connect.Code]error{
	connect.CodeNotFound:           ErrNotFound,
	connect.CodeAlreadyExists:      ErrAlreadyExists,
	connect.CodeInvalidArgument:    ErrInvalidArgument,
	connect.CodeOutOfRange:         ErrInvalidArgument,
	connect.CodeUnauthenticated:    ErrUnauthenticated,
	connect.CodePermissionDenied:   ErrPermission,
	connect.CodeFailedPrecondition: ErrFailedPrecondition,
	connect.CodeResourceExhausted:  ErrNotEnoughSpace,
	connect.CodeUnavailable:        ErrUnavailable,
	connect.CodeUnimplemented:      ErrUnimplemented,
	connect.CodeCanceled:           ErrCanceled,
	connect.CodeDeadlineExceeded:   ErrDeadlineExceeded,
}

var statusKinds = map[int]error{
	http.StatusBadRequest:                   ErrInvalidArgument,
	http.StatusUnauthorized:                 ErrUnauthenticated,
	http.StatusForbidden:                    ErrPermission,
	http.StatusNotFound:                     ErrNotFound,
	http.StatusConflict:                     ErrAlreadyExists,
	http.StatusNotAcceptable:                ErrNotAcceptable,
	http.StatusRequestedRangeNotSatisfiable: ErrRangeNotSatisfiable,
	http.StatusPreconditionFailed:           ErrFailedPrecondition,
	http.StatusTooManyRequests:              ErrUnavailable,
	http.StatusBadGateway:                   ErrUnavailable,
	http.StatusServiceUnavailable:           ErrUnavailable,
	http.StatusGatewayTimeout:               ErrDeadlineExceeded,
	http.StatusInsufficientStorage:          ErrNotEnoughSpace,
	http.StatusNotImplemented:               ErrUnimplemented,
	http.StatusMethodNotAllowed:             ErrUnimplemented,
}

// rpcError converts what a generated client returned. Errors that did not
// come from envd (a refused connection) are wrapped as ErrUnavailable, a
// context that ended as ErrCanceled/ErrDeadlineExceeded.
func rpcError(op string, err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	e := &Error{Op: op}
	if errors.Is(err, context.Canceled) {
		e.Kind, e.Code, e.cause = ErrCanceled, connect.CodeCanceled, context.Canceled
	} else if errors.Is(err, context.DeadlineExceeded) {
		e.Kind, e.Code, e.cause = ErrDeadlineExceeded, connect.CodeDeadlineExceeded, context.DeadlineExceeded
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		e.Message = ce.Message()
		if e.Kind == nil {
			e.Code = ce.Code()
			e.Kind = codeKinds[ce.Code()]
		}
	} else if e.Kind == nil {
		e.Kind, e.Message = ErrUnavailable, err.Error()
	}
	if e.Kind == nil {
		e.Kind = ErrInternal
	}
	return e
}

// httpError reads envd's JSON error body ({"code":N,"message":"…"}) or plain
// text, at most 4 KiB, and classifies the status.
func httpError(op string, res *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
	e := &Error{Op: op, Status: res.StatusCode, Kind: statusKinds[res.StatusCode]}
	if e.Kind == nil {
		e.Kind = ErrInternal
	}
	var j struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &j) == nil && j.Message != "" {
		e.Message = j.Message
	} else {
		e.Message = strings.TrimSpace(string(body))
	}
	return e
}

// transportError wraps a failure to reach envd at all.
func transportError(op string, err error) error {
	e := &Error{Op: op, Kind: ErrUnavailable, Message: err.Error()}
	switch {
	case errors.Is(err, context.Canceled):
		e.Kind, e.cause, e.Message = ErrCanceled, context.Canceled, ""
	case errors.Is(err, context.DeadlineExceeded):
		e.Kind, e.cause, e.Message = ErrDeadlineExceeded, context.DeadlineExceeded, ""
	}
	return e
}
