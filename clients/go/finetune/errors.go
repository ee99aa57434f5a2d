package finetune

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of the service's errors.
const ErrorDomain = "finetune.fileengine"

// Error is a failed call, with the details the service attaches to its status
// (google.rpc.ErrorInfo, BadRequest, PreconditionFailure, RetryInfo). Every
// call through a Client returns one on failure; match it with errors.As:
//
//	var fe *finetune.Error
//	if errors.As(err, &fe) && fe.Reason == "DATASET_INVALID" { ... }
//
// status.Code(err) and status.FromError(err) keep working on it.
type Error struct {
	// Code is the gRPC status code; CodeName is its canonical name.
	Code codes.Code
	// Message is the status message.
	Message string
	// Reason is ErrorInfo.reason, a stable UPPER_SNAKE_CASE identifier such as
	// "JOB_NOT_FOUND"; empty when the status carries no ErrorInfo (for example a
	// transport failure).
	Reason string
	// Domain is ErrorInfo.domain: ErrorDomain for the service's own errors.
	Domain string
	// Metadata is ErrorInfo.metadata (for example "provider", or "job_id" for
	// JOB_NOT_FOUND); nil when absent.
	Metadata map[string]string
	// FieldViolations are BadRequest's: which request fields are wrong.
	FieldViolations []FieldViolation
	// PreconditionViolations are PreconditionFailure's: for DATASET_INVALID, one
	// per dataset problem, with subjects like "training:LINE:path".
	PreconditionViolations []PreconditionViolation
	// RetryDelay is RetryInfo's delay: how long to wait before retrying; 0 when
	// the service gave none.
	RetryDelay time.Duration
	// RequestID is the request id StartTraining generated for a request that had
	// none; empty otherwise (the caller already has its own). Call StartTraining
	// again with it as RequestId: the service returns the job the failed call may
	// have started instead of starting a second one.
	RequestID string

	status *status.Status
}

// FieldViolation names a bad request field (google.rpc.BadRequest.FieldViolation).
type FieldViolation struct {
	Field       string
	Description string
}

// PreconditionViolation is one failed precondition
// (google.rpc.PreconditionFailure.Violation).
type PreconditionViolation struct {
	Type        string
	Subject     string
	Description string
}

// CodeName is Code's canonical upper-case name, as the other SDKs and the
// gRPC specification spell it: "UNAVAILABLE", "DEADLINE_EXCEEDED",
// "CANCELLED". (Code.String() is grpc-go's "Unavailable".)
func (e *Error) CodeName() string {
	if int(e.Code) < len(codeNames) {
		return codeNames[e.Code]
	}
	return "CODE(" + strconv.Itoa(int(e.Code)) + ")"
}

// codeNames are the canonical names of the codes, by number (google.rpc.Code).
var codeNames = [...]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("finetune: %s: %s", e.Code, e.Message)
	if e.Reason != "" {
		msg = fmt.Sprintf("finetune: %s (%s): %s", e.Code, e.Reason, e.Message)
	}
	if e.RequestID != "" {
		msg += " (retry with request id " + e.RequestID + ")"
	}
	return msg
}

// GRPCStatus lets status.FromError and status.Code see the original status.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// asError converts a gRPC status error into an *Error; io.EOF (the normal end of
// a stream), nil and non-status errors pass through unchanged.
func asError(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			e.Reason, e.Domain, e.Metadata = d.GetReason(), d.GetDomain(), d.GetMetadata()
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations, FieldViolation{v.GetField(), v.GetDescription()})
			}
		case *errdetails.PreconditionFailure:
			for _, v := range d.GetViolations() {
				e.PreconditionViolations = append(e.PreconditionViolations,
					PreconditionViolation{v.GetType(), v.GetSubject(), v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			e.RetryDelay = d.GetRetryDelay().AsDuration()
		}
	}
	return e
}

// typedErrorsUnary makes every unary call return *Error.
func typedErrorsUnary(ctx context.Context, method string, req, reply any,
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return asError(invoker(ctx, method, req, reply, cc, opts...))
}

// typedErrorsStream makes every streaming call return *Error.
func typedErrorsStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn,
	method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	stream, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, asError(err)
	}
	return typedErrorStream{stream}, nil
}

type typedErrorStream struct{ grpc.ClientStream }

func (s typedErrorStream) SendMsg(m any) error { return asError(s.ClientStream.SendMsg(m)) }
func (s typedErrorStream) RecvMsg(m any) error { return asError(s.ClientStream.RecvMsg(m)) }
func (s typedErrorStream) CloseSend() error    { return asError(s.ClientStream.CloseSend()) }

func (s typedErrorStream) Header() (metadata.MD, error) {
	md, err := s.ClientStream.Header()
	return md, asError(err)
}
