package finetune

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// StartTraining starts a fine-tuning job like the generated call, with two
// additions. An empty RequestId is filled with a new random UUID (the job
// carries it in Job.RequestId); req itself is not modified. And since the
// service returns the same job for the same request id, a call that fails with
// UNAVAILABLE is retried with that id (DefaultBackoff: from 0.2 s doubling to
// 5 s, for 60 s or until ctx's deadline; see WithRetry), after the server's
// RetryInfo delay when it sends one: a retry never starts a second job. That
// covers reason UPSTREAM_OUTCOME_UNKNOWN, when OpenAI may have created the job
// and the service could not confirm it yet.
//
// On failure the error is an *Error; when the id was generated here, its
// RequestID holds it, so that a call again after an error (a deadline, or
// UNAVAILABLE after the retries) can reuse it without risking a second job.
func (c *Client) StartTraining(ctx context.Context, req *StartTrainingRequest, opts ...grpc.CallOption) (*StartTrainingResponse, error) {
	if req == nil {
		req = &StartTrainingRequest{}
	}
	generated := ""
	if req.GetRequestId() == "" {
		req = proto.CloneOf(req)
		req.RequestId = uuid.NewString()
		generated = req.RequestId
	}
	failed := c.retry.failures()
	for {
		resp, err := c.FineTuneServiceClient.StartTraining(ctx, req, opts...)
		if err == nil {
			return resp, nil
		}
		if status.Code(err) != codes.Unavailable || !failed.wait(ctx, retryDelay(err)) {
			return nil, carryRequestID(err, generated)
		}
	}
}

// carryRequestID returns err as an *Error whose RequestID is id.
func carryRequestID(err error, id string) error {
	var e *Error
	if !errors.As(err, &e) {
		// Not a status (an interceptor of the caller's, say): keep its text and code.
		st := status.Convert(err)
		e = &Error{Code: st.Code(), Message: st.Message(), status: st}
	}
	e.RequestID = id
	return e
}

// Terminal reports whether a job in state s has finished (succeeded, failed or
// cancelled): its WatchJob stream ends and it can no longer change.
func Terminal(s JobState) bool {
	switch s {
	case JobStateSucceeded, JobStateFailed, JobStateCancelled:
		return true
	}
	return false
}

// retryDelay is the RetryInfo delay err carries, or 0.
func retryDelay(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryDelay
	}
	return 0
}
