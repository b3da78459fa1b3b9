package proc

import (
	"errors"
	"fmt"
)

// Kinds of failure; the API layer maps each to a wire code. Errors returned
// by this package wrap one of them and carry the client-facing message.
var (
	ErrNotFound     = errors.New("not found")
	ErrInvalid      = errors.New("invalid argument")
	ErrPrecondition = errors.New("failed precondition")
	ErrInternal     = errors.New("internal error")
	ErrCanceled     = errors.New("canceled")
	ErrOutOfRange   = errors.New("out of range")
)

type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
