package finetune_test

// Ambiguous creates through the SDK: OpenAI's answer to a create is lost or
// unreadable, the caller's deadline passes mid-create, or several callers race
// with one request id. Each case must end with exactly one job at the emulated
// OpenAI for the request id, tracked by the service, whose poller takes it to
// SUCCEEDED. The tests do only what the README says a caller does: use the
// client as it is (it retries UNAVAILABLE with the same request id), and after
// an error it returned (such as DEADLINE_EXCEEDED) call again with the same id.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"

	"github.com/fileengine/finetune/clients/go/finetune"
)

const (
	createJob = "POST /v1/fine_tuning/jobs"
	listJobs  = "GET /v1/fine_tuning/jobs"
)

// startSample starts training on the sample dataset with requestID ("": generated).
func startSample(ctx context.Context, client *finetune.Client, requestID string) (*finetune.Job, error) {
	training, err := client.DatasetFromFile(ctx, server.SampleDataset)
	if err != nil {
		return nil, err
	}
	started, err := client.StartTraining(ctx, &finetune.StartTrainingRequest{RequestId: requestID, Training: training})
	return started.GetJob(), err
}

// assertOneTrackedJob checks that the emulated OpenAI holds exactly this job for
// its request id and that the service's poller takes it to SUCCEEDED.
func assertOneTrackedJob(ctx context.Context, t *testing.T, client *finetune.Client, job *finetune.Job) {
	t.Helper()
	if job.GetUpstreamId() == "" {
		t.Fatalf("job %s has no upstream id", job.GetId())
	}
	if got := server.UpstreamJobs(t, job.GetRequestId()); !slices.Equal(got, []string{job.GetUpstreamId()}) {
		t.Fatalf("upstream jobs for %s: %v, want [%s]", job.GetRequestId(), got, job.GetUpstreamId())
	}
	var last *finetune.JobEvent
	for ev, err := range client.WatchJob(ctx, job.GetId(), 0).Events() {
		if err != nil {
			t.Fatal(err)
		}
		last = ev
	}
	if state := last.GetJob().GetState(); state != finetune.JobStateSucceeded {
		t.Fatalf("job %s ended %v, want SUCCEEDED", job.GetId(), state)
	}
}

func TestAmbiguousCreateAnswerMakesOneTrackedJob(t *testing.T) {
	for _, kind := range []string{"malformed_json", "lost_response"} {
		t.Run(kind, func(t *testing.T) {
			ctx := testContext(t)
			client := dial(t)
			t.Cleanup(func() { server.ClearFaults(t) })
			server.Inject(t, createJob, kind, nil)
			requestID := uuid.NewString()
			job, err := startSample(ctx, client, requestID)
			if err != nil {
				t.Fatal(err)
			}
			if job.GetRequestId() != requestID {
				t.Errorf("request id %q, want %q", job.GetRequestId(), requestID)
			}
			assertOneTrackedJob(ctx, t, client, job)
		})
	}
}

// unconfirmedCreate starts a job whose create OpenAI makes but cannot confirm,
// without retries: the service answers UNAVAILABLE, UPSTREAM_OUTCOME_UNKNOWN,
// with a RetryInfo (checked here). It returns the error and the request id,
// for the caller to settle the job with.
func unconfirmedCreate(ctx context.Context, t *testing.T) (*finetune.Error, string) {
	t.Helper()
	t.Cleanup(func() { server.ClearFaults(t) })
	// The job is made but its answer is unreadable, and OpenAI's job list fails
	// from then on (the look-up before the create passes) for every look-up the
	// server makes: 2 more creation attempts and the final settle, each a list
	// call tried 3 times.
	server.Inject(t, listJobs, "latency", map[string]any{"ms": 0})
	server.Inject(t, listJobs, "unavailable", map[string]any{"times": 9})
	server.Inject(t, createJob, "malformed_json", nil)
	requestID := uuid.NewString()
	_, err := startSample(ctx, dial(t, finetune.WithRetry(finetune.Backoff{})), requestID)
	fe := asError(t, err)
	if fe.Code != codes.Unavailable || fe.Reason != "UPSTREAM_OUTCOME_UNKNOWN" || fe.RetryDelay <= 0 {
		t.Fatalf("got %v (retry delay %v), want UNAVAILABLE UPSTREAM_OUTCOME_UNKNOWN with a RetryInfo", err, fe.RetryDelay)
	}
	return fe, requestID
}

func TestUnconfirmedCreateIsUnavailableWithRetryInfoAndRetried(t *testing.T) {
	ctx := testContext(t)
	_, requestID := unconfirmedCreate(ctx, t)
	// Called again with the same request id (the default client), the reservation
	// the unconfirmed create kept is settled by the look-up: the one job, not a second.
	client := dial(t)
	job, err := startSample(ctx, client, requestID)
	if err != nil {
		t.Fatal(err)
	}
	assertOneTrackedJob(ctx, t, client, job)
}

func TestDeadlinePassingMidCreateThenTheSameRequestIDGetsTheJob(t *testing.T) {
	ctx := testContext(t)
	client := dial(t)
	t.Cleanup(func() { server.ClearFaults(t) })
	server.Inject(t, createJob, "latency", map[string]any{"ms": 3000})
	requestID := uuid.NewString()
	hurried, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := startSample(hurried, client, requestID)
	// The client's own timer, or the server's (tonic answers CANCELLED "Timeout expired").
	fe := asError(t, err)
	if fe.Code != codes.DeadlineExceeded && fe.Code != codes.Canceled {
		t.Fatalf("got %v, want DEADLINE_EXCEEDED or CANCELLED", err)
	}
	if fe.RequestID != "" {
		t.Errorf("error carries request id %q; the caller set its own", fe.RequestID)
	}
	// As the README says: call again with the same request id.
	job, err := startSample(ctx, client, requestID)
	if err != nil {
		t.Fatal(err)
	}
	assertOneTrackedJob(ctx, t, client, job)
}

// A caller that lets the SDK generate the request id gets it back in the error
// and retries with it, as the README shows: one job, the one the failed call
// started.
func TestGeneratedRequestIDIsCarriedByTheError(t *testing.T) {
	ctx := testContext(t)
	client := dial(t)
	t.Cleanup(func() { server.ClearFaults(t) })
	server.Inject(t, createJob, "latency", map[string]any{"ms": 3000})
	training, err := client.DatasetFromFile(ctx, server.SampleDataset)
	if err != nil {
		t.Fatal(err)
	}
	hurried, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = client.StartTraining(hurried, &finetune.StartTrainingRequest{Training: training})
	var fe *finetune.Error
	if !errors.As(err, &fe) || (fe.Code != codes.DeadlineExceeded && fe.Code != codes.Canceled) {
		t.Fatalf("got %v, want DEADLINE_EXCEEDED or CANCELLED", err)
	}
	if id, err := uuid.Parse(fe.RequestID); err != nil || id.Version() != 4 {
		t.Fatalf("error %v carries request id %q, want the generated UUIDv4", fe, fe.RequestID)
	}
	if !strings.Contains(fe.Error(), fe.RequestID) {
		t.Errorf("the error's text %q does not name the request id", fe.Error())
	}

	started, err := client.StartTraining(ctx, &finetune.StartTrainingRequest{RequestId: fe.RequestID, Training: training})
	if err != nil {
		t.Fatal(err)
	}
	if started.GetJob().GetRequestId() != fe.RequestID {
		t.Errorf("job's request id %q, want %q", started.GetJob().GetRequestId(), fe.RequestID)
	}
	assertOneTrackedJob(ctx, t, client, started.GetJob())
}

func TestConcurrentCallsWithOneRequestIDOnSeveralConnections(t *testing.T) {
	ctx := testContext(t)
	t.Cleanup(func() { server.ClearFaults(t) })
	server.Inject(t, createJob, "latency", map[string]any{"ms": 1000})
	requestID := uuid.NewString()
	const callers = 4
	jobs := make([]*finetune.Job, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		own := dial(t) // its own connection
		wg.Go(func() { jobs[i], errs[i] = startSample(ctx, own, requestID) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
		if jobs[i].GetId() != jobs[0].GetId() || jobs[i].GetUpstreamId() != jobs[0].GetUpstreamId() {
			t.Fatalf("caller %d got job %s/%s, caller 0 %s/%s", i, jobs[i].GetId(), jobs[i].GetUpstreamId(),
				jobs[0].GetId(), jobs[0].GetUpstreamId())
		}
	}
	assertOneTrackedJob(ctx, t, dial(t), jobs[0])
}
