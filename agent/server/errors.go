package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kthw/kthw/agent/module"
)

// Errors of the server's own requests; module errors come from package module.
var (
	errInvalid  = errors.New("invalid request")
	errDataLoss = errors.New("data loss")
	errNotFound = errors.New("not found")
)

// toStatus translates an error into a gRPC status error. Every handler
// returns its errors through it, so the codes are decided in one place.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, errInvalid), errors.Is(err, module.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, module.ErrUnsupported):
		code = codes.Unimplemented
	case errors.Is(err, module.ErrBlobMissing):
		code = codes.FailedPrecondition
	case errors.Is(err, errDataLoss):
		code = codes.DataLoss
	case errors.Is(err, errNotFound):
		code = codes.NotFound
	}
	return status.Error(code, err.Error())
}

// isRequestError reports whether a module's error means the request could
// not be carried out at all (a status error for the RPC) rather than a module
// that ran and failed (an error in its result).
func isRequestError(err error) bool {
	return errors.Is(err, module.ErrInvalid) ||
		errors.Is(err, module.ErrUnsupported) ||
		errors.Is(err, module.ErrBlobMissing) ||
		errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded)
}
