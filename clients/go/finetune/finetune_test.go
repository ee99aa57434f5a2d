package finetune_test

// These tests run against the real service (emulator mode) started by TestMain:
// server is plaintext and open, secured (secure_test.go) requires tokens and TLS.
// They run one after another because a harness's cut closes every connection.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fileengine/finetune/clients/go/finetune"
	"github.com/fileengine/finetune/clients/go/internal/harness"
)

// server and secured are the package's harnesses, started by TestMain.
var server, secured *harness.Harness

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m, harness.Into(&server), harness.Into(&secured, harness.Secure)))
}

// testContext bounds a test as a safety net; nothing waits for it to expire.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, opts ...finetune.Option) *finetune.Client {
	t.Helper()
	client, err := finetune.Dial(server.Address, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// asError asserts that err is a *finetune.Error.
func asError(t *testing.T, err error) *finetune.Error {
	t.Helper()
	var fe *finetune.Error
	if !errors.As(err, &fe) {
		t.Fatalf("want a *finetune.Error, got %T: %v", err, err)
	}
	return fe
}

func userMessage(text string) []*finetune.ChatMessage {
	return []*finetune.ChatMessage{{Role: finetune.ChatRoleUser, Content: text}}
}

func TestValidateSampleDataset(t *testing.T) {
	ctx := testContext(t)
	report, err := dial(t).ValidateDataset(ctx, finetune.Path(server.SampleDataset), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := report.GetTraining().GetExamples(); got != 13 {
		t.Errorf("examples = %d, want 13", got)
	}
	if report.GetErrorCount() != 0 {
		t.Errorf("error_count = %d, want 0: %v", report.GetErrorCount(), report.GetProblems())
	}
	if report.GetFormat() != finetune.DatasetFormatChat {
		t.Errorf("format = %v, want chat", report.GetFormat())
	}
	if report.GetTraining().GetTokens().GetTotal() == 0 || report.GetEstimatedCostUsd() <= 0 {
		t.Errorf("no token count or cost: %v", report)
	}
}

// A file above the inline limit is streamed through UploadDataset in 1 MiB
// chunks and validated by its id.
func TestLargeDatasetIsUploadedInChunks(t *testing.T) {
	ctx := testContext(t)
	sample, err := os.ReadFile(server.SampleDataset)
	if err != nil {
		t.Fatal(err)
	}
	copies := (2<<20)/len(sample) + 1 // a little over 2 MiB: three chunks
	big := bytes.Repeat(sample, copies)
	path := filepath.Join(t.TempDir(), "big.jsonl")
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(big)
	wantID := hex.EncodeToString(sum[:])

	client := dial(t, finetune.WithInlineLimit(1<<20))
	source, err := client.DatasetFromFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if source.GetDatasetId() != wantID || source.GetContent() != nil {
		t.Fatalf("source = %v, want dataset_id %s", source, wantID)
	}
	again, err := client.UploadDataset(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetAlreadyPresent() || again.GetDatasetId() != wantID || again.GetSizeBytes() != uint64(len(big)) {
		t.Errorf("second upload = %v, want the same dataset, already present", again)
	}

	report, err := client.ValidateDataset(ctx, finetune.Path(path), &finetune.ValidateDatasetRequest{MaxProblems: 5})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := report.GetTraining().GetExamples(), uint64(13*copies); got != want {
		t.Errorf("examples = %d, want %d", got, want)
	}
	if report.GetTraining().GetSha256() != wantID || report.GetErrorCount() != 0 {
		t.Errorf("report: sha256 %s, %d errors; want %s, 0 errors",
			report.GetTraining().GetSha256(), report.GetErrorCount(), wantID)
	}
}

// The pipeline: train, watch to the end through a cut connection, promote the
// model, complete and stream a completion from it.
func TestTrainWatchThroughCutThenServe(t *testing.T) {
	ctx := testContext(t)
	client := dial(t)

	// Before the first promotion (a fresh harness; not on a repeated run) the fast tier
	// has no model.
	tiers, err := client.ListTiers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(tiers, func(tier *finetune.Tier) bool { return tier.GetName() == "fast" })
	if i < 0 {
		t.Fatalf("no fast tier in %v", tiers)
	}
	if tiers[i].GetModel() == "" {
		_, err := client.Complete(ctx, &finetune.CompleteRequest{Tier: "fast", Messages: userMessage("Hello")})
		if fe := asError(t, err); fe.Code != codes.FailedPrecondition || fe.Reason != "TIER_HAS_NO_MODEL" {
			t.Errorf("complete before promotion: %v, want FAILED_PRECONDITION TIER_HAS_NO_MODEL", err)
		}
	}

	training, err := client.DatasetFromFile(ctx, server.SampleDataset)
	if err != nil {
		t.Fatal(err)
	}
	started, err := client.StartTraining(ctx, &finetune.StartTrainingRequest{Training: training, Suffix: "go-sdk"})
	if err != nil {
		t.Fatal(err)
	}
	job := started.GetJob()
	if id, err := uuid.Parse(job.GetRequestId()); err != nil || id.Version() != 4 {
		t.Errorf("request id %q is not a generated UUIDv4", job.GetRequestId())
	}
	// The same request id is the same job, never a second one.
	repeated, err := client.StartTraining(ctx, &finetune.StartTrainingRequest{
		RequestId: job.GetRequestId(), Training: training, Suffix: "go-sdk",
	})
	if err != nil {
		t.Fatal(err)
	}
	if repeated.GetJob().GetId() != job.GetId() {
		t.Errorf("repeated request: job %s, want %s", repeated.GetJob().GetId(), job.GetId())
	}

	events := watchThroughCut(t, ctx, client, server, job.GetId())
	last := events[len(events)-1]
	model := last.GetJob().GetFineTunedModel()
	if model == "" {
		t.Fatal("succeeded job without a fine-tuned model")
	}
	t.Logf("%d events through a cut, model %s", len(events), model)

	// Resuming from a position yields exactly the events after it.
	n := uint64(len(events))
	var tail []uint64
	for ev, err := range client.WatchJob(ctx, job.GetId(), n-3).Events() {
		if err != nil {
			t.Fatal(err)
		}
		tail = append(tail, ev.GetSequence())
	}
	if want := []uint64{n - 2, n - 1, n}; !slices.Equal(tail, want) {
		t.Errorf("watch after %d: %v, want %v", n-3, tail, want)
	}

	if _, err := client.PromoteModel(ctx, "fast", finetune.FromJob(job.GetId())); err != nil {
		t.Fatal(err)
	}
	request := &finetune.CompleteRequest{Tier: "fast", Messages: userMessage("Build me a landing page with dark theme")}
	answer, err := client.Complete(ctx, request)
	if err != nil {
		t.Fatal(err)
	}
	if c := answer; c.GetModel() != model || c.GetText() == "" || c.GetTier() != "fast" {
		t.Errorf("completion: model %q tier %q text %q; want the promoted %q", c.GetModel(), c.GetTier(), c.GetText(), model)
	}
	// The job trained the default base model; its fine-tuned model bills at its own price.
	assertCost(t, answer, "gpt-4o-2024-08-06", true)

	var deltas []string
	stream := client.StreamComplete(ctx, request)
	for text, err := range stream.Text() {
		if err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, text)
	}
	streamed := stream.Completion()
	if len(deltas) == 0 || strings.Join(deltas, "") != streamed.GetText() || streamed.GetModel() != model {
		t.Errorf("stream: %d deltas joined to %q, summary %q from %q", len(deltas), strings.Join(deltas, ""),
			streamed.GetText(), streamed.GetModel())
	}
	assertCost(t, streamed, "gpt-4o-2024-08-06", true)
}

// watchThroughCut watches a job to its end while h cuts every connection once,
// just after the first event; see watchThrough.
func watchThroughCut(t *testing.T, ctx context.Context, client *finetune.Client, h *harness.Harness,
	jobID string) []*finetune.JobEvent {
	t.Helper()
	return watchThrough(t, ctx, client, h, jobID, 1, func() {
		if n := h.Cut(t); n < 1 {
			t.Fatalf("cut closed %d connections, want the watch's", n)
		}
	})
}

// watchThrough watches a job to its end, calling disrupt once the watch has
// yielded after events (its stream is open: an event just came through it),
// and checks that the watch resumed on a new connection and yielded every
// event once, in order, ending with the state change to SUCCEEDED.
func watchThrough(t *testing.T, ctx context.Context, client *finetune.Client, h *harness.Harness,
	jobID string, after int, disrupt func()) []*finetune.JobEvent {
	t.Helper()
	var events []*finetune.JobEvent
	acceptedAtDisruption := -1
	watch := client.WatchJob(ctx, jobID, 0)
	for ev, err := range watch.Events() {
		if err != nil {
			t.Fatalf("watch after %d events: %v", len(events), err)
		}
		events = append(events, ev)
		if len(events) == after {
			acceptedAtDisruption = h.Accepted(t)
			disrupt()
		}
	}
	if acceptedAtDisruption < 0 {
		t.Fatalf("%d events, want more than %d", len(events), after)
	}
	if h.Accepted(t) <= acceptedAtDisruption || watch.Resumes() < 1 {
		t.Errorf("no new connection after the disruption (%d resumes): the watch did not resume", watch.Resumes())
	}
	for i, ev := range events {
		if ev.GetSequence() != uint64(i+1) {
			t.Fatalf("event %d has sequence %d: want 1, 2, 3, ... with no gap or repeat (got %v)",
				i, ev.GetSequence(), sequences(events))
		}
	}
	last := events[len(events)-1]
	if last.GetKind() != finetune.JobEventKindStateChanged || last.GetJob().GetState() != finetune.JobStateSucceeded {
		t.Fatalf("last event: %v %v, want the state change to SUCCEEDED", last.GetKind(), last.GetJob().GetState())
	}
	return events
}

func sequences(events []*finetune.JobEvent) []uint64 {
	out := make([]uint64, len(events))
	for i, ev := range events {
		out[i] = ev.GetSequence()
	}
	return out
}

// A restart of the server mid-watch, down for 5 s (longer than the old
// client's retries lasted): with the default policy the watch waits it out and
// goes on from where it was.
func TestWatchSurvivesServerRestart(t *testing.T) {
	ctx := testContext(t)
	client := dial(t)
	job, err := startSample(ctx, client, "")
	if err != nil {
		t.Fatal(err)
	}
	events := watchThrough(t, ctx, client, server, job.GetId(), 3, func() {
		server.Restart(t, 5*time.Second)
	})
	t.Logf("%d events through a 5 s restart", len(events))
}

// Cancelling the context stops a watch with the context's error; the job goes
// on until CancelJob.
func TestWatchStopsWithItsContext(t *testing.T) {
	ctx := testContext(t)
	client := dial(t)
	jobID := startLongJob(ctx, t, client)

	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	var got []error
	for ev, err := range client.WatchJob(watchCtx, jobID, 0).Events() {
		got = append(got, err)
		if ev != nil {
			stop()
		}
	}
	if len(got) != 2 || got[0] != nil || !errors.Is(got[1], context.Canceled) {
		t.Fatalf("watch yielded %v, want one event then context.Canceled", got)
	}

	cancelled, err := client.CancelJob(ctx, jobID)
	if err != nil {
		t.Fatal(err)
	}
	if s := cancelled.GetState(); s != finetune.JobStateCancelled {
		t.Errorf("state after CancelJob = %v, want cancelled", s)
	}
	_, err = client.CancelJob(ctx, jobID)
	if fe := asError(t, err); fe.Code != codes.FailedPrecondition || fe.Reason != "JOB_FINISHED" {
		t.Errorf("second cancel: %v, want FAILED_PRECONDITION JOB_FINISHED", err)
	}
}

// A dataset with a line that is not JSON: validation reports it (the call
// succeeds), training refuses it with a typed error listing the problem.
func TestInvalidDatasetIsRefusedWithTypedError(t *testing.T) {
	ctx := testContext(t)
	client := dial(t)
	path := invalidDataset(t)

	report, err := client.ValidateDataset(ctx, finetune.Path(path), nil)
	if err != nil {
		t.Fatalf("ValidateDataset on a bad dataset: %v, want a report", err)
	}
	if report.GetErrorCount() != 1 {
		t.Errorf("report: %d errors, want 1", report.GetErrorCount())
	}
	errorsFound := slices.DeleteFunc(slices.Clone(report.GetProblems()), func(p *finetune.Problem) bool {
		return p.GetSeverity() != finetune.SeverityError
	})
	if len(errorsFound) != 1 || errorsFound[0].GetCode() != "invalid_json" || errorsFound[0].GetLine() != 2 {
		t.Errorf("errors = %v, want invalid_json on line 2", errorsFound)
	}

	training, err := client.DatasetFromFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.StartTraining(ctx, &finetune.StartTrainingRequest{Training: training})
	fe := asError(t, err)
	if fe.Code != codes.FailedPrecondition || fe.Reason != "DATASET_INVALID" || fe.Domain != finetune.ErrorDomain {
		t.Errorf("error = %v (domain %q), want FAILED_PRECONDITION DATASET_INVALID", fe, fe.Domain)
	}
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("status.Code = %v, want FAILED_PRECONDITION", status.Code(err))
	}
	if v := fe.PreconditionViolations; len(v) != 1 || v[0].Type != "invalid_json" || v[0].Subject != "training:2" {
		t.Errorf("violations = %+v, want invalid_json at training:2", v)
	}
}

func TestMissingFieldIsBadRequest(t *testing.T) {
	_, err := dial(t).ValidateDataset(testContext(t), nil, nil)
	fe := asError(t, err)
	if fe.Code != codes.InvalidArgument || fe.Reason != "INVALID_ARGUMENT" {
		t.Errorf("error = %v, want INVALID_ARGUMENT", fe)
	}
	if len(fe.FieldViolations) != 1 || fe.FieldViolations[0].Field != "training" {
		t.Errorf("field violations = %+v, want one for training", fe.FieldViolations)
	}
}

func TestUnknownJobIsNotFound(t *testing.T) {
	ctx, client := testContext(t), dial(t)
	_, err := client.GetJob(ctx, "job-does-not-exist")
	if fe := asError(t, err); fe.Code != codes.NotFound || fe.Reason != "JOB_NOT_FOUND" {
		t.Errorf("GetJob: %v, want NOT_FOUND JOB_NOT_FOUND", fe)
	}
	var got []error
	for _, err := range client.WatchJob(ctx, "job-does-not-exist", 0).Events() {
		got = append(got, err)
	}
	if len(got) != 1 || asError(t, got[0]).Reason != "JOB_NOT_FOUND" {
		t.Errorf("WatchJob yielded %v, want JOB_NOT_FOUND alone", got)
	}
}
