package finetune_test

// What the real server cannot be made to show (tokens and TLS are in
// secure_test.go): the decoding of error details it only sends when an upstream
// provider rate-limits (RetryInfo), answered here by a bare gRPC endpoint, and
// the retries and resumes against an address where nothing listens.

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/fileengine/finetune/clients/go/finetune"
	finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"
)

var rateLimited = func() *status.Status {
	st, err := status.New(codes.ResourceExhausted, "rate limited upstream").WithDetails(
		&errdetails.ErrorInfo{Reason: "UPSTREAM_RATE_LIMITED", Domain: finetune.ErrorDomain,
			Metadata: map[string]string{"provider": "openai"}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "model", Description: "unknown model"}}},
	)
	if err != nil {
		panic(err)
	}
	return st
}()

// statusEndpoint is a gRPC server that answers every call with st.
func statusEndpoint(t *testing.T, st *status.Status) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handler := func(_ any, stream grpc.ServerStream) error {
		_ = stream.RecvMsg(&emptypb.Empty{}) // the request's fields are kept as unknown ones
		return st.Err()
	}
	server := grpc.NewServer(grpc.UnknownServiceHandler(handler))
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	return listener.Addr().String()
}

func TestRateLimitDetailsAreDecoded(t *testing.T) {
	client, err := finetune.Dial(statusEndpoint(t, rateLimited))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err = client.GetJob(ctx, "job-1")
	fe := asError(t, err)
	if fe.Code != codes.ResourceExhausted || fe.Reason != "UPSTREAM_RATE_LIMITED" || fe.Domain != finetune.ErrorDomain ||
		fe.Metadata["provider"] != "openai" || fe.RetryDelay != 3*time.Second ||
		len(fe.FieldViolations) != 1 || fe.FieldViolations[0].Field != "model" {
		t.Errorf("decoded error = %+v", fe)
	}
	if want := "finetune: ResourceExhausted (UPSTREAM_RATE_LIMITED): rate limited upstream"; fe.Error() != want {
		t.Errorf("Error() = %q, want %q", fe.Error(), want)
	}
}

// deadAddress is a local address nothing listens on: every call fails with UNAVAILABLE.
func deadAddress(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	_ = listener.Close()
	return address
}

// StartTraining retries UNAVAILABLE until its budget is spent, always with the
// same generated request id, and the error carries that id.
func TestStartTrainingRetriesWithTheSameRequestID(t *testing.T) {
	var requestIDs []string
	record := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		requestIDs = append(requestIDs, req.(*finetunev1.StartTrainingRequest).GetRequestId())
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	client, err := finetune.Dial(deadAddress(t),
		finetune.WithRetry(finetune.Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond, Budget: 300 * time.Millisecond}),
		finetune.WithDialOptions(grpc.WithUnaryInterceptor(record)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	_, err = client.StartTraining(t.Context(), &finetune.StartTrainingRequest{})
	fe := asError(t, err)
	if fe.Code != codes.Unavailable {
		t.Errorf("error = %v, want UNAVAILABLE after the retries", err)
	}
	if len(requestIDs) < 3 || requestIDs[0] == "" || slices.ContainsFunc(requestIDs, func(id string) bool { return id != requestIDs[0] }) {
		t.Fatalf("request ids of the attempts = %q, want several times the same generated one", requestIDs)
	}
	if fe.RequestID != requestIDs[0] {
		t.Errorf("the error carries request id %q, want the generated %q", fe.RequestID, requestIDs[0])
	}
}

// A watch that cannot reconnect keeps trying until its budget is spent, then
// gives up with the last error; a budget of 0 never resumes.
func TestWatchGivesUpWhenItsBudgetIsSpent(t *testing.T) {
	for _, c := range []struct {
		name      string
		budget    time.Duration
		resumable bool
	}{
		{"budget", 300 * time.Millisecond, true},
		{"no budget", 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			attempts := 0
			count := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
				streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				attempts++
				return streamer(ctx, desc, cc, method, opts...)
			}
			client, err := finetune.Dial(deadAddress(t),
				finetune.WithResume(finetune.Resume{Initial: time.Millisecond, Max: 10 * time.Millisecond, Budget: c.budget}),
				finetune.WithDialOptions(grpc.WithStreamInterceptor(count)))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()

			var got []error
			for ev, err := range client.WatchJob(t.Context(), "job-1", 0).Events() {
				if ev != nil {
					t.Fatalf("event from nowhere: %v", ev)
				}
				got = append(got, err)
			}
			if len(got) != 1 || status.Code(got[0]) != codes.Unavailable {
				t.Fatalf("watch yielded %v, want one UNAVAILABLE", got)
			}
			if resumed := attempts > 1; resumed != c.resumable {
				t.Errorf("%d attempts; want resumes: %v", attempts, c.resumable)
			}
		})
	}
}

// quietJob answers WatchJob as a server does for a job with nothing to report
// for a while: the first stream sends heartbeats only, for quiet, then drops;
// each later stream sends the next event, the third finishing the job.
type quietJob struct {
	finetunev1.UnimplementedFineTuneServiceServer
	quiet time.Duration
	calls int
}

func (q *quietJob) WatchJob(req *finetunev1.WatchJobRequest, stream grpc.ServerStreamingServer[finetunev1.WatchJobResponse]) error {
	q.calls++
	running := &finetunev1.Job{Id: req.GetJobId(), State: finetunev1.JobState_JOB_STATE_RUNNING}
	if err := stream.Send(&finetunev1.WatchJobResponse{Item: &finetunev1.WatchJobResponse_Snapshot{Snapshot: running}}); err != nil {
		return err
	}
	if q.calls == 1 {
		for end := time.Now().Add(q.quiet); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			beat := &finetunev1.Heartbeat{LastSequence: req.GetAfterSequence()}
			if err := stream.Send(&finetunev1.WatchJobResponse{Item: &finetunev1.WatchJobResponse_Heartbeat{Heartbeat: beat}}); err != nil {
				return err
			}
		}
		return status.Error(codes.Unavailable, "the server went away")
	}
	seq := req.GetAfterSequence() + 1
	ev := &finetunev1.JobEvent{JobId: req.GetJobId(), Sequence: seq, Kind: finetunev1.JobEventKind_JOB_EVENT_KIND_MESSAGE}
	if seq == 3 {
		ev.Kind = finetunev1.JobEventKind_JOB_EVENT_KIND_STATE_CHANGED
		ev.Job = &finetunev1.Job{Id: req.GetJobId(), State: finetunev1.JobState_JOB_STATE_SUCCEEDED}
	}
	return stream.Send(&finetunev1.WatchJobResponse{Item: &finetunev1.WatchJobResponse_Event{Event: ev}})
}

// A job quiet for longer than the budget, then a dropped stream: the watch
// still resumes, because the budget counts from the failure, not the event.
func TestWatchResumesADropAfterAQuietSpellLongerThanTheBudget(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	job := &quietJob{quiet: 600 * time.Millisecond}
	finetunev1.RegisterFineTuneServiceServer(server, job)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)

	client, err := finetune.Dial(listener.Addr().String(),
		finetune.WithResume(finetune.Resume{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Budget: 300 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var got []uint64
	for ev, err := range client.WatchJob(t.Context(), "job-1", 0).Events() {
		if err != nil {
			t.Fatalf("after events %v: %v", got, err)
		}
		got = append(got, ev.GetSequence())
	}
	if len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Fatalf("events %v, want 1, 2, 3", got)
	}
}
