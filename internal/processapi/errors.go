package processapi

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/proc"
)

// toConnect maps proc's error kinds to wire codes; the message is the
// domain error's own text, which is what clients show.
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
	case errors.Is(err, proc.ErrCanceled):
		code = connect.CodeCanceled
	}
	return connect.NewError(code, err)
}

func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

// streamEnded reports why a stream's context ended: the Connect-Timeout-Ms
// deadline or the client going away.
func streamEnded(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	}
	return connect.NewError(connect.CodeCanceled, ctx.Err())
}
