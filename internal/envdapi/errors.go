package envdapi

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/portwatch"
	"github.com/envd-dev/envd/internal/proc"
)

// toConnect maps domain errors to wire codes; the message is the domain
// error's own text.
func toConnect(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	code := connect.CodeInternal
	switch {
	case errors.Is(err, proc.ErrNotFound):
		code = connect.CodeNotFound
	case errors.Is(err, proc.ErrInvalid):
		code = connect.CodeInvalidArgument
	case errors.Is(err, proc.ErrPrecondition):
		code = connect.CodeFailedPrecondition
	case errors.Is(err, proc.ErrOutOfRange):
		code = connect.CodeOutOfRange
	case errors.Is(err, proc.ErrCanceled):
		code = connect.CodeCanceled
	case errors.Is(err, portwatch.ErrOverflow):
		code = connect.CodeResourceExhausted
	}
	return connect.NewError(code, err)
}

func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

// ended reports why a call's context ended: its Connect-Timeout-Ms deadline
// or the client going away.
func ended(ctx context.Context, what string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("%s: deadline exceeded", what))
	}
	return connect.NewError(connect.CodeCanceled, fmt.Errorf("%s: %w", what, ctx.Err()))
}
