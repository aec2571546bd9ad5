package llmgateway

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// Domain is the `google.rpc.ErrorInfo` domain of every error the gateway returns.
const Domain = "llmgateway.v1"

// ErrorInfo returns the google.rpc.ErrorInfo detail of a gRPC status error: its Reason (for
// example "MODEL_NOT_FOUND"), Domain ([Domain]) and Metadata (which always carries "request_id").
// It returns nil when err is nil, is not a gRPC status error, or has no such detail. Errors wrapped
// with fmt.Errorf("...: %w", err) are unwrapped.
func ErrorInfo(err error) *errdetails.ErrorInfo {
	return detail[*errdetails.ErrorInfo](err)
}

// BadRequest returns the google.rpc.BadRequest detail of a gRPC status error. The gateway attaches
// one to every INVALID_ARGUMENT error; its FieldViolations name each bad field by its proto path,
// for example "generation.temperature". It returns nil when there is no such detail.
func BadRequest(err error) *errdetails.BadRequest {
	return detail[*errdetails.BadRequest](err)
}

// RetryInfo returns the google.rpc.RetryInfo detail of a gRPC status error. The gateway attaches
// one to RESOURCE_EXHAUSTED errors when the provider said when to retry; RetryDelay is the wait.
// It returns nil when there is no such detail.
func RetryInfo(err error) *errdetails.RetryInfo {
	return detail[*errdetails.RetryInfo](err)
}

// detail returns the first detail of type T in err's status, or the zero T.
func detail[T any](err error) T {
	var zero T
	if err == nil {
		return zero
	}
	st, ok := status.FromError(err)
	if !ok {
		return zero
	}
	for _, d := range st.Details() {
		if v, ok := d.(T); ok {
			return v
		}
	}
	return zero
}
