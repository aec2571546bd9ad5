package llmgateway

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestErrorDetails(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "bad temperature").WithDetails(
		&errdetails.ErrorInfo{Reason: "INVALID_REQUEST", Domain: Domain, Metadata: map[string]string{"request_id": "r1"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "generation.temperature", Description: "must be 0 to 2"},
		}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(2 * time.Second)},
	)
	if err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"plain":   st.Err(),
		"wrapped": fmt.Errorf("calling gateway: %w", st.Err()),
	} {
		t.Run(name, func(t *testing.T) {
			if got := ErrorInfo(err); got.GetReason() != "INVALID_REQUEST" || got.GetDomain() != Domain || got.GetMetadata()["request_id"] != "r1" {
				t.Errorf("ErrorInfo = %v", got)
			}
			if got := BadRequest(err).GetFieldViolations(); len(got) != 1 || got[0].GetField() != "generation.temperature" {
				t.Errorf("BadRequest violations = %v", got)
			}
			if got := RetryInfo(err).GetRetryDelay().AsDuration(); got != 2*time.Second {
				t.Errorf("RetryInfo delay = %v, want 2s", got)
			}
		})
	}
}

func TestErrorDetailsAbsent(t *testing.T) {
	for name, err := range map[string]error{
		"nil":        nil,
		"not status": errors.New("boom"),
		"no details": status.Error(codes.Unavailable, "down"),
	} {
		t.Run(name, func(t *testing.T) {
			if got := ErrorInfo(err); got != nil {
				t.Errorf("ErrorInfo = %v, want nil", got)
			}
			if got := BadRequest(err); got != nil {
				t.Errorf("BadRequest = %v, want nil", got)
			}
			if got := RetryInfo(err); got != nil {
				t.Errorf("RetryInfo = %v, want nil", got)
			}
		})
	}
}
