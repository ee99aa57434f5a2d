package finetune

import (
	"context"
	"iter"

	finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"
)

// GetJob returns the latest snapshot of the job jobID (this service's id, or
// an OpenAI `ftjob-...` id, which the service adopts). An unknown id is
// NOT_FOUND, reason JOB_NOT_FOUND. The generated call is
// client.FineTuneServiceClient.GetJob.
func (c *Client) GetJob(ctx context.Context, jobID string) (*Job, error) {
	resp, err := c.FineTuneServiceClient.GetJob(ctx, &finetunev1.GetJobRequest{JobId: jobID})
	return resp.GetJob(), err
}

// CancelJob asks OpenAI to cancel the job and returns it; its state becomes
// JobStateCancelled once OpenAI confirms. Cancelling a finished job is
// FAILED_PRECONDITION, reason JOB_FINISHED.
func (c *Client) CancelJob(ctx context.Context, jobID string) (*Job, error) {
	resp, err := c.FineTuneServiceClient.CancelJob(ctx, &finetunev1.CancelJobRequest{JobId: jobID})
	return resp.GetJob(), err
}

// ListJobsOptions filters and pages ListJobs.
type ListJobsOptions struct {
	// State, when set, keeps only the jobs in that state.
	State JobState
	// PageSize is how many jobs each request fetches, 1..100; 0 means the
	// server's default, 20. It changes the number of requests, not the jobs
	// yielded.
	PageSize uint32
}

// ListJobs yields every job (or every job in opts.State), newest first,
// fetching the pages as the loop goes; breaking out fetches no more. On
// failure it yields one (nil, err) and stops.
//
//	for job, err := range client.ListJobs(ctx, finetune.ListJobsOptions{State: finetune.JobStateRunning}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(job.GetId())
//	}
//
// ListJobsPage fetches one page.
func (c *Client) ListJobs(ctx context.Context, opts ListJobsOptions) iter.Seq2[*Job, error] {
	return func(yield func(*Job, error) bool) {
		req := &ListJobsRequest{State: opts.State, PageSize: opts.PageSize}
		for {
			page, err := c.ListJobsPage(ctx, req)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, job := range page.GetJobs() {
				if !yield(job, nil) {
					return
				}
			}
			if page.GetNextPageToken() == "" {
				return
			}
			req = &ListJobsRequest{State: opts.State, PageSize: opts.PageSize, PageToken: page.GetNextPageToken()}
		}
	}
}

// ListJobsPage returns one page of jobs, newest first, as the generated
// ListJobs does: pass its NextPageToken as the next request's PageToken; the
// last page's is empty. req may be nil (the first page of every job).
func (c *Client) ListJobsPage(ctx context.Context, req *ListJobsRequest) (*ListJobsResponse, error) {
	if req == nil {
		req = &ListJobsRequest{}
	}
	return c.FineTuneServiceClient.ListJobs(ctx, req)
}
