package finetune_test

// The API shape: one subtest per row of the table "The API, concept by concept
// (0.2.0)" in clients/README.md, named after the row, checking what the Go
// column claims against the real server (a local stand-in only where the
// server cannot be made to answer so), and one for the names renamed in 0.2.0.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fileengine/finetune/clients/go/finetune"
	finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"
)

func TestAPIShape(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute) // a safety net
	defer cancel()
	client := dial(t)

	// trained is a job trained on the sample dataset, to its end, for the rows
	// that need one (get, promote, complete, ...).
	var trained *finetune.Job
	trainedJob := func(t *testing.T) *finetune.Job {
		t.Helper()
		if trained == nil {
			job, err := startSample(ctx, client, "")
			if err != nil {
				t.Fatal(err)
			}
			trained = watchToEnd(ctx, t, client, job.GetId())
		}
		return trained
	}
	// served is a completion from the fast tier after the trained job's model
	// was promoted to it.
	var served *finetune.Completion

	t.Run("validate", func(t *testing.T) {
		report, err := client.ValidateDataset(ctx, finetune.Path(server.SampleDataset), nil)
		if err != nil {
			t.Fatal(err)
		}
		if report.GetTraining().GetExamples() != 13 || report.GetErrorCount() != 0 {
			t.Errorf("path: %d examples, %d errors; want 13, 0", report.GetTraining().GetExamples(), report.GetErrorCount())
		}
		// A DatasetSource made once, with options: the report follows them.
		source, err := client.DatasetFromFile(ctx, server.SampleDataset)
		if err != nil {
			t.Fatal(err)
		}
		epochs := uint32(3)
		report, err = client.ValidateDataset(ctx, finetune.Source(source), &finetune.ValidateDatasetRequest{Epochs: &epochs})
		if err != nil {
			t.Fatal(err)
		}
		if report.GetTraining().GetExamples() != 13 || report.GetEpochs() != epochs {
			t.Errorf("source: %d examples, %d epochs; want 13, %d", report.GetTraining().GetExamples(), report.GetEpochs(), epochs)
		}
		// A dataset with errors is a report, not an error.
		report, err = client.ValidateDataset(ctx, finetune.Path(invalidDataset(t)), nil)
		if err != nil {
			t.Fatalf("a dataset with errors: %v, want a report", err)
		}
		if report.GetErrorCount() != 1 {
			t.Errorf("a dataset with errors: %d errors, want 1", report.GetErrorCount())
		}
	})

	t.Run("upload", func(t *testing.T) {
		content := fmt.Appendf(nil, `{"messages":[{"role":"user","content":"%s"},{"role":"assistant","content":"ok"}]}`+"\n",
			uuid.NewString()) // bytes this server has never stored
		path := filepath.Join(t.TempDir(), "fresh.jsonl")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(content)
		for i, wantPresent := range []bool{false, true} {
			uploaded, err := client.UploadDataset(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			if uploaded.GetDatasetId() != hex.EncodeToString(sum[:]) || uploaded.GetSizeBytes() != uint64(len(content)) ||
				uploaded.GetAlreadyPresent() != wantPresent {
				t.Errorf("upload %d: %v, want id %x, %d bytes, already present %v", i+1, uploaded, sum, len(content), wantPresent)
			}
		}
		// DatasetFromFile: inline up to 8 MiB, uploaded above.
		if finetune.DefaultInlineLimit != 8<<20 {
			t.Errorf("DefaultInlineLimit = %d, want 8 MiB", finetune.DefaultInlineLimit)
		}
		for _, size := range []int{finetune.DefaultInlineLimit, finetune.DefaultInlineLimit + 1} {
			path := filepath.Join(t.TempDir(), "sized.jsonl")
			if err := os.WriteFile(path, bytes.Repeat([]byte{'\n'}, size), 0o600); err != nil {
				t.Fatal(err)
			}
			source, err := client.DatasetFromFile(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			inline := source.GetContent() != nil
			if inline != (size <= finetune.DefaultInlineLimit) || inline == (source.GetDatasetId() != "") {
				t.Errorf("%d bytes: inline %v, dataset id %q; want inline only up to 8 MiB", size, inline, source.GetDatasetId())
			}
		}
	})

	t.Run("start", func(t *testing.T) {
		if want := (finetune.Backoff{Initial: 200 * time.Millisecond, Max: 5 * time.Second, Budget: time.Minute}); finetune.DefaultBackoff != want {
			t.Errorf("DefaultBackoff = %+v, want %+v", finetune.DefaultBackoff, want)
		}
		// The default client waits out a restart of the server, retrying with
		// the id it generated: one job, with that id, at OpenAI.
		server.Restart(t, 2*time.Second)
		job, err := startSample(ctx, client, "")
		if err != nil {
			t.Fatalf("start during a restart: %v", err)
		}
		if job == nil {
			t.Fatal("StartTrainingResponse.Job is nil")
		}
		if id, err := uuid.Parse(job.GetRequestId()); err != nil || id.Version() != 4 {
			t.Errorf("request id %q is not a generated UUIDv4", job.GetRequestId())
		}
		if got := server.UpstreamJobs(t, job.GetRequestId()); len(got) != 1 {
			t.Errorf("upstream jobs for the request id: %v, want one", got)
		}

		// RetryInfo is honoured up to Max: a server asking for an hour does not
		// stop the retries, and they stop with the budget.
		unavailable, err := status.New(codes.Unavailable, "busy").WithDetails(
			&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		attempts := 0
		busy, err := finetune.Dial(statusEndpoint(t, unavailable),
			finetune.WithRetry(finetune.Backoff{Initial: time.Millisecond, Max: 20 * time.Millisecond, Budget: 300 * time.Millisecond}),
			countCalls(&attempts))
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		_, err = busy.StartTraining(ctx, &finetune.StartTrainingRequest{})
		if fe := asError(t, err); fe.Code != codes.Unavailable || fe.RetryDelay != time.Hour || attempts < 3 {
			t.Errorf("%d attempts ending with %v; want UNAVAILABLE after retries every 20 ms at most", attempts, err)
		}

		// The caller's deadline ends the retries long before the default 60 s.
		down, err := finetune.Dial(deadAddress(t))
		if err != nil {
			t.Fatal(err)
		}
		defer down.Close()
		hurried, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		began := time.Now()
		_, err = down.StartTraining(hurried, &finetune.StartTrainingRequest{})
		if fe := asError(t, err); fe.RequestID == "" || time.Since(began) > 30*time.Second {
			t.Errorf("after %v: %v; want an error with the request id at the deadline", time.Since(began), err)
		}
	})

	t.Run("get", func(t *testing.T) {
		want := trainedJob(t)
		job, err := client.GetJob(ctx, want.GetId())
		if err != nil {
			t.Fatal(err)
		}
		if job.GetId() != want.GetId() || job.GetState() != finetune.JobStateSucceeded ||
			job.GetFineTunedModel() != want.GetFineTunedModel() {
			t.Errorf("GetJob = %v, want %v", job, want)
		}
	})

	t.Run("list", func(t *testing.T) {
		// More jobs than a page of 2 holds, the newest of all.
		var started []string
		for range 3 {
			job, err := startSample(ctx, client, "")
			if err != nil {
				t.Fatal(err)
			}
			started = append(started, job.GetId())
		}
		slices.Reverse(started)

		requests := 0
		counted := dial(t, countCalls(&requests))
		var all []*finetune.Job
		for job, err := range counted.ListJobs(ctx, finetune.ListJobsOptions{PageSize: 2}) {
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, job)
		}
		ids := jobIDs(all)
		if len(ids) < 3 || !slices.Equal(ids[:3], started) {
			t.Fatalf("ListJobs starts with %v, want the jobs just started, newest first: %v", ids[:min(3, len(ids))], started)
		}
		for i := 1; i < len(all); i++ {
			if all[i].GetCreateTime().AsTime().After(all[i-1].GetCreateTime().AsTime()) {
				t.Errorf("job %d (%s) is newer than job %d", i, all[i].GetId(), i-1)
			}
		}
		if pages := (len(all) + 1) / 2; requests != pages && requests != pages+1 {
			t.Errorf("%d requests for %d jobs in pages of 2", requests, len(all))
		}
		// Every job once: the same as the pages fetched one by one.
		var paged []string
		req := &finetune.ListJobsRequest{PageSize: 2}
		for {
			page, err := client.ListJobsPage(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.GetJobs()) > 2 {
				t.Fatalf("a page of %d jobs, want at most 2", len(page.GetJobs()))
			}
			paged = append(paged, jobIDs(page.GetJobs())...)
			if page.GetNextPageToken() == "" {
				break
			}
			req.PageToken = page.GetNextPageToken()
		}
		if !slices.Equal(ids, paged) {
			t.Errorf("ListJobs yielded %d jobs, the pages hold %d: %v vs %v", len(ids), len(paged), ids, paged)
		}
		// Breaking out fetches no more pages.
		requests = 0
		for range counted.ListJobs(ctx, finetune.ListJobsOptions{PageSize: 2}) {
			break
		}
		if requests != 1 {
			t.Errorf("breaking after the first job: %d requests, want 1", requests)
		}
		// State filters.
		for job, err := range client.ListJobs(ctx, finetune.ListJobsOptions{State: finetune.JobStateSucceeded}) {
			if err != nil {
				t.Fatal(err)
			}
			if job.GetState() != finetune.JobStateSucceeded {
				t.Fatalf("ListJobs(SUCCEEDED) yielded %s in %v", job.GetId(), job.GetState())
			}
		}
	})

	t.Run("cancel", func(t *testing.T) {
		jobID := startLongJob(ctx, t, client)
		job, err := client.CancelJob(ctx, jobID)
		if err != nil {
			t.Fatal(err)
		}
		if job.GetId() != jobID || job.GetState() != finetune.JobStateCancelled {
			t.Errorf("CancelJob = %s %v, want %s cancelled", job.GetId(), job.GetState(), jobID)
		}
		_, err = client.CancelJob(ctx, jobID)
		if fe := asError(t, err); fe.Code != codes.FailedPrecondition || fe.Reason != "JOB_FINISHED" {
			t.Errorf("second cancel: %v, want FAILED_PRECONDITION JOB_FINISHED", err)
		}
	})

	t.Run("watch", func(t *testing.T) {
		job, err := startSample(ctx, client, "")
		if err != nil {
			t.Fatal(err)
		}
		w := client.WatchJob(ctx, job.GetId(), 0)
		if w.Job() != nil || w.Resumes() != 0 || w.LastSequence() != 0 {
			t.Errorf("before the first event: job %v, %d resumes, last sequence %d; want nil, 0, 0",
				w.Job(), w.Resumes(), w.LastSequence())
		}
		var events []*finetune.JobEvent
		var stateChange uint64 // the last state change yielded
		for ev, err := range w.Events() {
			if err != nil {
				t.Fatal(err)
			}
			events = append(events, ev)
			if w.LastSequence() != ev.GetSequence() || ev.GetSequence() != uint64(len(events)) {
				t.Fatalf("event %d: sequence %d, LastSequence %d", len(events), ev.GetSequence(), w.LastSequence())
			}
			if ev.GetKind() == finetune.JobEventKindStateChanged {
				stateChange = ev.GetSequence()
			}
			if w.Job().GetId() != job.GetId() || w.Job().GetLastSequence() < stateChange {
				t.Fatalf("after event %d (%v), Job() = %v; want the job as of state change %d or later",
					len(events), ev.GetKind(), w.Job(), stateChange)
			}
			if len(events) == 1 {
				server.Cut(t) // it resumes after the cut
			}
		}
		last := events[len(events)-1]
		if last.GetKind() != finetune.JobEventKindStateChanged || !finetune.Terminal(last.GetJob().GetState()) {
			t.Errorf("the last event is %v %v, want the terminal state change", last.GetKind(), last.GetJob().GetState())
		}
		if w.Resumes() < 1 || w.Job().GetState() != finetune.JobStateSucceeded || w.LastSequence() != last.GetSequence() {
			t.Errorf("after the end: %d resumes, job %v, last sequence %d; want a resume, SUCCEEDED, %d",
				w.Resumes(), w.Job().GetState(), w.LastSequence(), last.GetSequence())
		}
		// Stop ends the loop without an error; the job goes on.
		long := startLongJob(ctx, t, client)
		w = client.WatchJob(ctx, long, 0)
		var got []error
		for ev, err := range w.Events() {
			got = append(got, err)
			if ev != nil {
				w.Stop()
			}
		}
		if len(got) != 1 || got[0] != nil {
			t.Errorf("a watch stopped at its first event yielded %v, want that event alone", got)
		}
		if job, err := client.GetJob(ctx, long); err != nil || finetune.Terminal(job.GetState()) {
			t.Errorf("the job after Stop: %v %v, want it still going", job.GetState(), err)
		}
		if _, err := client.CancelJob(ctx, long); err != nil {
			t.Error(err)
		}
	})

	t.Run("promote", func(t *testing.T) {
		job := trainedJob(t)
		promoted, err := client.PromoteModel(ctx, "fast", finetune.FromJob(job.GetId()))
		if err != nil {
			t.Fatal(err)
		}
		if promoted.GetTier().GetName() != "fast" || promoted.GetTier().GetModel() != job.GetFineTunedModel() ||
			promoted.GetTier().GetPromotedFromJob() != job.GetId() {
			t.Errorf("promoted from the job: %v, want fast serving %s", promoted.GetTier(), job.GetFineTunedModel())
		}
		again, err := client.PromoteModel(ctx, "fast", finetune.FromModel(job.GetFineTunedModel()))
		if err != nil {
			t.Fatal(err)
		}
		if again.GetTier().GetModel() != job.GetFineTunedModel() || again.GetPreviousModel() != job.GetFineTunedModel() {
			t.Errorf("promoted by name: %v, previous %q; want %s both", again.GetTier(), again.GetPreviousModel(),
				job.GetFineTunedModel())
		}
	})

	t.Run("tiers", func(t *testing.T) {
		tiers, err := client.ListTiers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(tiers, func(tier *finetune.Tier) bool { return tier.GetName() == "fast" })
		if i < 0 || tiers[i].GetModel() != trainedJob(t).GetFineTunedModel() {
			t.Errorf("tiers %v, want fast serving the promoted %s", tiers, trainedJob(t).GetFineTunedModel())
		}
	})

	t.Run("complete", func(t *testing.T) {
		completion, err := client.Complete(ctx, &finetune.CompleteRequest{Tier: "fast", Messages: userMessage("Hello")})
		if err != nil {
			t.Fatal(err)
		}
		if completion.GetText() == "" || completion.GetResponseId() == "" || completion.GetTier() != "fast" ||
			completion.GetModel() != trainedJob(t).GetFineTunedModel() {
			t.Errorf("Complete = %v, want an answer from the promoted model", completion)
		}
		served = completion
	})

	t.Run("stream", func(t *testing.T) {
		stream := client.StreamComplete(ctx, &finetune.CompleteRequest{Tier: "fast", Messages: userMessage("Hello")})
		if stream.Completion() != nil {
			t.Error("a Completion before the stream ran")
		}
		var text []string
		for delta, err := range stream.Text() {
			if err != nil {
				t.Fatal(err)
			}
			text = append(text, delta)
		}
		completion := stream.Completion()
		if len(text) < 2 || completion.GetText() != strings.Join(text, "") || completion.GetModel() != trainedJob(t).GetFineTunedModel() {
			t.Errorf("%d deltas %q, then %v; want the deltas of the Completion's text", len(text), text, completion)
		}
		// Stop ends the loop without an error, and without a Completion.
		stream = client.StreamComplete(ctx, &finetune.CompleteRequest{Tier: "fast", Messages: userMessage("Hello")})
		var got []error
		for _, err := range stream.Text() {
			got = append(got, err)
			stream.Stop()
		}
		if len(got) != 1 || got[0] != nil || stream.Completion() != nil {
			t.Errorf("a stream stopped at its first delta yielded %v, completion %v; want the delta alone", got, stream.Completion())
		}
	})

	t.Run("feedback", func(t *testing.T) {
		if served == nil {
			t.Skip("no completion: see the complete row")
		}
		for _, rating := range []finetune.Rating{finetune.RatingDown, finetune.RatingUp} { // the later replaces the earlier
			resp, err := client.RecordFeedback(ctx, served.GetResponseId(), rating)
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetTier() != "fast" || resp.GetArm() != "" {
				t.Errorf("feedback: tier %q arm %q, want fast and no arm", resp.GetTier(), resp.GetArm())
			}
		}
		_, err := client.RecordFeedback(ctx, "no-such-response", finetune.RatingUp)
		if fe := asError(t, err); fe.Code != codes.NotFound {
			t.Errorf("feedback on an unknown response: %v, want NOT_FOUND", err)
		}
	})

	t.Run("stats", func(t *testing.T) {
		fast, err := client.GetTierStats(ctx, "fast")
		if err != nil {
			t.Fatal(err)
		}
		var requests, ups uint64
		for _, row := range fast {
			if row.GetTier() != "fast" {
				t.Errorf("GetTierStats(fast) has a row for %s", row.GetTier())
			}
			requests += row.GetRequests()
			ups += row.GetThumbsUp()
		}
		if requests < 2 || (served != nil && ups < 1) {
			t.Errorf("fast: %d requests, %d thumbs up; want the completions and the feedback above", requests, ups)
		}
		every, err := client.GetTierStats(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(every) < len(fast) || !slices.ContainsFunc(every, func(row *finetune.TierStats) bool { return row.GetTier() == "fast" }) {
			t.Errorf("GetTierStats(\"\") = %d rows, want every tier's, fast's among them", len(every))
		}
	})

	t.Run("errors: type", func(t *testing.T) {
		_, err := client.GetJob(ctx, "job-does-not-exist")
		asError(t, err)
		var fromStream error
		for _, err := range client.WatchJob(ctx, "job-does-not-exist", 0).Events() {
			fromStream = err
		}
		asError(t, fromStream)
		down, err := finetune.Dial(deadAddress(t))
		if err != nil {
			t.Fatal(err)
		}
		defer down.Close()
		_, err = down.ListTiers(ctx)
		asError(t, err) // a transport failure too
	})

	t.Run("errors: code", func(t *testing.T) {
		_, err := client.GetJob(ctx, "job-does-not-exist")
		if fe := asError(t, err); fe.Code != codes.NotFound || fe.CodeName() != "NOT_FOUND" {
			t.Errorf("code %v, name %q; want NotFound, NOT_FOUND", fe.Code, fe.CodeName())
		}
		_, err = client.ValidateDataset(ctx, nil, nil)
		if fe := asError(t, err); fe.CodeName() != "INVALID_ARGUMENT" {
			t.Errorf("code name %q, want INVALID_ARGUMENT", fe.CodeName())
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		_, err = client.GetJob(cancelled, "job-1")
		if fe := asError(t, err); fe.Code != codes.Canceled || fe.CodeName() != "CANCELLED" {
			t.Errorf("code %v, name %q; want Canceled, CANCELLED (the canonical spelling)", fe.Code, fe.CodeName())
		}
	})

	t.Run("errors: reason", func(t *testing.T) {
		_, err := client.GetJob(ctx, "job-does-not-exist")
		if fe := asError(t, err); fe.Reason != "JOB_NOT_FOUND" {
			t.Errorf("reason %q, want JOB_NOT_FOUND", fe.Reason)
		}
		// Absent: a status without ErrorInfo, as a connection that fails gives.
		down, err := finetune.Dial(deadAddress(t))
		if err != nil {
			t.Fatal(err)
		}
		defer down.Close()
		_, err = down.GetJob(ctx, "job-1")
		if fe := asError(t, err); fe.Code != codes.Unavailable || fe.Reason != "" || fe.Metadata != nil {
			t.Errorf("without ErrorInfo: %v, reason %q, metadata %v; want UNAVAILABLE, \"\", nil", fe, fe.Reason, fe.Metadata)
		}
	})

	t.Run("errors: retry delay", func(t *testing.T) {
		fe, requestID := unconfirmedCreate(ctx, t) // checks RetryDelay > 0
		var delay time.Duration = fe.RetryDelay
		t.Logf("UPSTREAM_OUTCOME_UNKNOWN asks for a retry after %v", delay)
		// Settle the unconfirmed start: the same id gets the job.
		if _, err := startSample(ctx, client, requestID); err != nil {
			t.Fatal(err)
		}
		// The duration as sent (the server's own delays depend on its settings).
		rateLimitedClient, err := finetune.Dial(statusEndpoint(t, rateLimited))
		if err != nil {
			t.Fatal(err)
		}
		defer rateLimitedClient.Close()
		_, err = rateLimitedClient.GetJob(ctx, "job-1")
		if fe := asError(t, err); fe.RetryDelay != 3*time.Second {
			t.Errorf("RetryDelay = %v, want the 3s sent", fe.RetryDelay)
		}
		// Absent: 0.
		_, err = client.GetJob(ctx, "job-does-not-exist")
		if fe := asError(t, err); fe.RetryDelay != 0 {
			t.Errorf("RetryDelay without RetryInfo = %v, want 0", fe.RetryDelay)
		}
	})

	t.Run("errors: details", func(t *testing.T) {
		_, err := client.GetJob(ctx, "job-does-not-exist")
		if fe := asError(t, err); fe.Metadata["job_id"] != "job-does-not-exist" {
			t.Errorf("JOB_NOT_FOUND metadata %v, want the job_id", fe.Metadata)
		}
		_, err = client.PromoteModel(ctx, "no-such-tier", finetune.FromModel("gpt-4o-mini"))
		if fe := asError(t, err); fe.Reason != "TIER_NOT_FOUND" || fe.Metadata["tier"] != "no-such-tier" {
			t.Errorf("%v: metadata %v, want TIER_NOT_FOUND naming the tier", fe, fe.Metadata)
		}
		_, err = client.ValidateDataset(ctx, nil, nil)
		if fe := asError(t, err); len(fe.FieldViolations) != 1 || fe.FieldViolations[0].Field != "training" {
			t.Errorf("field violations %+v, want one for training", fe.FieldViolations)
		}
		invalid, err := client.DatasetFromFile(ctx, invalidDataset(t))
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.StartTraining(ctx, &finetune.StartTrainingRequest{Training: invalid})
		if fe := asError(t, err); len(fe.PreconditionViolations) != 1 || fe.PreconditionViolations[0].Subject != "training:2" {
			t.Errorf("precondition violations %+v, want one at training:2", fe.PreconditionViolations)
		}
	})

	t.Run("errors: request id", func(t *testing.T) {
		invalid, err := client.DatasetFromFile(ctx, invalidDataset(t))
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.StartTraining(ctx, &finetune.StartTrainingRequest{Training: invalid})
		if fe := asError(t, err); uuid.Validate(fe.RequestID) != nil {
			t.Errorf("a start with a generated id: RequestID %q, want the UUID", fe.RequestID)
		}
		_, err = client.StartTraining(ctx, &finetune.StartTrainingRequest{Training: invalid, RequestId: uuid.NewString()})
		if fe := asError(t, err); fe.RequestID != "" {
			t.Errorf("a start with the caller's id: RequestID %q, want \"\"", fe.RequestID)
		}
		_, err = client.GetJob(ctx, "job-does-not-exist")
		if fe := asError(t, err); fe.RequestID != "" {
			t.Errorf("GetJob: RequestID %q, want \"\"", fe.RequestID)
		}
	})

	t.Run("enums", func(t *testing.T) {
		// Every value of the nine enums has its short constant, of the generated
		// type, in enums.go (regenerated by go generate when the protos change).
		constants := enumConstants(t)
		for _, e := range []protoreflect.Enum{
			finetune.JobState(0), finetune.JobEventKind(0), finetune.TrainingMethod(0),
			finetune.FinishReason(0), finetune.ChatRole(0), finetune.Rating(0),
			finetune.Provider(0), finetune.Severity(0), finetune.DatasetFormat(0),
		} {
			values := e.Descriptor().Values()
			for i := range values.Len() {
				value := values.Get(i)
				generated := fmt.Sprintf("%s_%s", e.Descriptor().Name(), value.Name())
				name, ok := constants[generated]
				if !ok {
					t.Errorf("no constant for finetunev1.%s: run go generate ./finetune", generated)
					continue
				}
				if !strings.HasPrefix(name, string(e.Descriptor().Name())) {
					t.Errorf("finetune.%s = finetunev1.%s: want the name to start with %s", name, generated, e.Descriptor().Name())
				}
				short := strings.TrimPrefix(string(value.Name()), strings.TrimSuffix(string(values.ByNumber(0).Name()), "UNSPECIFIED"))
				if got := finetune.EnumName(e.Type().New(value.Number())); got != short {
					t.Errorf("EnumName(%s) = %q, want %q", value.Name(), got, short)
				}
			}
		}
		var state finetunev1.JobState = finetune.JobStateSucceeded // the generated type
		if state != finetunev1.JobState_JOB_STATE_SUCCEEDED || finetune.TrainingMethodDPO != finetunev1.TrainingMethod_TRAINING_METHOD_DPO {
			t.Error("a short constant is not its generated value")
		}
		// What the server sends.
		job := trainedJob(t)
		if job.GetState() != finetune.JobStateSucceeded || finetune.EnumName(job.GetState()) != "SUCCEEDED" ||
			finetune.EnumName(job.GetMethod()) != "SUPERVISED" {
			t.Errorf("job: %v %v, want SUCCEEDED SUPERVISED", finetune.EnumName(job.GetState()), finetune.EnumName(job.GetMethod()))
		}
		if got := finetune.EnumName(finetune.JobState(99)); got != "99" {
			t.Errorf("EnumName of an unknown value = %q, want its number", got)
		}
	})

	t.Run("async", func(t *testing.T) {
		// context.Context everywhere: every call of the client takes one first...
		contextType := reflect.TypeFor[context.Context]()
		clientType := reflect.TypeFor[*finetune.Client]()
		for i := range clientType.NumMethod() {
			m := clientType.Method(i)
			if m.Name == "Close" {
				continue
			}
			if m.Type.NumIn() < 2 || m.Type.In(1) != contextType {
				t.Errorf("%s does not take a context.Context first: %v", m.Name, m.Type)
			}
		}
		// ...and honours it, streams included.
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := client.ListTiers(cancelled); status.Code(err) != codes.Canceled {
			t.Errorf("ListTiers with a cancelled context: %v", err)
		}
		var got []error
		for _, err := range client.WatchJob(cancelled, trainedJob(t).GetId(), 0).Events() {
			got = append(got, err)
		}
		if len(got) != 1 || (!errors.Is(got[0], context.Canceled) && status.Code(got[0]) != codes.Canceled) {
			t.Errorf("WatchJob with a cancelled context yielded %v, want CANCELLED alone", got)
		}
	})

	t.Run("generated stubs", func(t *testing.T) {
		resp, err := client.FineTuneServiceClient.GetJob(ctx, &finetunev1.GetJobRequest{JobId: trainedJob(t).GetId()})
		if err != nil || resp.GetJob().GetId() != trainedJob(t).GetId() {
			t.Errorf("the generated GetJob: %v, %v", resp, err)
		}
		_, err = client.FineTuneServiceClient.GetJob(ctx, &finetunev1.GetJobRequest{JobId: "job-does-not-exist"})
		asError(t, err) // typed errors on the generated calls too
	})

	// The names renamed in 0.2.0 still work, and are marked deprecated (what
	// go vet's and gopls' deprecation checks read).
	t.Run("deprecated", func(t *testing.T) {
		deprecated := deprecatedMethods(t)
		for _, name := range []string{"ValidateFile", "UploadFile", "Watch", "StreamCompletion"} {
			if !deprecated[name] {
				t.Errorf("(*Client).%s has no \"Deprecated:\" paragraph", name)
			}
		}
		report, err := client.ValidateFile(ctx, server.SampleDataset, nil)
		if err != nil || report.GetTraining().GetExamples() != 13 {
			t.Errorf("ValidateFile: %v, %v", report.GetTraining(), err)
		}
		uploaded, err := client.UploadFile(ctx, server.SampleDataset)
		if err != nil || uploaded.GetDatasetId() != report.GetTraining().GetSha256() {
			t.Errorf("UploadFile: %v, %v", uploaded, err)
		}
		job, err := client.GetJob(ctx, trainedJob(t).GetId())
		if err != nil {
			t.Fatal(err)
		}
		var sequences []uint64
		for ev, err := range client.Watch(ctx, job.GetId(), job.GetLastSequence()-2) {
			if err != nil {
				t.Fatal(err)
			}
			sequences = append(sequences, ev.GetSequence())
		}
		if want := []uint64{job.GetLastSequence() - 1, job.GetLastSequence()}; !slices.Equal(sequences, want) {
			t.Errorf("Watch yielded %v, want %v", sequences, want)
		}
		var deltas strings.Builder
		completion, err := client.StreamCompletion(ctx, &finetune.CompleteRequest{Tier: "fast", Messages: userMessage("Hello")},
			func(delta string) { deltas.WriteString(delta) })
		if err != nil || completion.GetText() == "" || completion.GetText() != deltas.String() {
			t.Errorf("StreamCompletion: %q after deltas %q, %v", completion.GetText(), deltas.String(), err)
		}
	})
}

// watchToEnd watches a job to its end and returns its final snapshot.
func watchToEnd(ctx context.Context, t *testing.T, client *finetune.Client, jobID string) *finetune.Job {
	t.Helper()
	w := client.WatchJob(ctx, jobID, 0)
	for _, err := range w.Events() {
		if err != nil {
			t.Fatal(err)
		}
	}
	if w.Job().GetState() != finetune.JobStateSucceeded || w.Job().GetFineTunedModel() == "" {
		t.Fatalf("job %s ended %v", jobID, w.Job())
	}
	return w.Job()
}

// startLongJob starts a job (50 epochs) that is still running when the test cancels it.
func startLongJob(ctx context.Context, t *testing.T, client *finetune.Client) string {
	t.Helper()
	training, err := client.DatasetFromFile(ctx, server.SampleDataset)
	if err != nil {
		t.Fatal(err)
	}
	epochs := uint32(50)
	started, err := client.StartTraining(ctx, &finetune.StartTrainingRequest{
		Training: training, Hyperparameters: &finetune.Hyperparameters{NEpochs: &epochs},
	})
	if err != nil {
		t.Fatal(err)
	}
	return started.GetJob().GetId()
}

// invalidDataset writes the sample dataset with a line that is not JSON as
// line 2, and returns its path.
func invalidDataset(t *testing.T) string {
	t.Helper()
	sample, err := os.ReadFile(server.SampleDataset)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(sample), "\n")
	path := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(path, []byte(lines[0]+"this line is not JSON\n"+strings.Join(lines[1:], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// countCalls counts the client's unary calls in *n.
func countCalls(n *int) finetune.Option {
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		*n++
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	return finetune.WithDialOptions(grpc.WithUnaryInterceptor(count))
}

func jobIDs(jobs []*finetune.Job) []string {
	ids := make([]string, len(jobs))
	for i, job := range jobs {
		ids[i] = job.GetId()
	}
	return ids
}

// enumConstants reads enums.go: the constant named for each generated enum
// value, by the value's generated name ("JobState_JOB_STATE_SUCCEEDED").
func enumConstants(t *testing.T) map[string]string {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), "enums.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	constants := map[string]string{}
	for _, decl := range file.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			value := spec.(*ast.ValueSpec)
			for i, name := range value.Names {
				if sel, ok := value.Values[i].(*ast.SelectorExpr); ok {
					if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "finetunev1" {
						constants[sel.Sel.Name] = name.Name
					}
				}
			}
		}
	}
	return constants
}

// deprecatedMethods are the methods of Client whose doc comment has a
// "Deprecated:" paragraph.
func deprecatedMethods(t *testing.T) map[string]bool {
	t.Helper()
	sources, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	deprecated := map[string]bool{}
	for _, path := range sources {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range file.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || fn.Doc == nil {
				continue
			}
			if strings.Contains("\n"+fn.Doc.Text(), "\n\nDeprecated: ") {
				deprecated[fn.Name.Name] = true
			}
		}
	}
	return deprecated
}
