package finetune

import (
	"context"

	finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"
)

// ListTiers returns every configured tier, in configuration order. The
// generated call is client.FineTuneServiceClient.ListTiers.
func (c *Client) ListTiers(ctx context.Context) ([]*Tier, error) {
	resp, err := c.FineTuneServiceClient.ListTiers(ctx, &finetunev1.ListTiersRequest{})
	return resp.GetTiers(), err
}

// PromoteSource is the model PromoteModel promotes: FromJob or FromModel.
type PromoteSource interface {
	setSource(req *finetunev1.PromoteModelRequest)
}

type fromJob string

func (id fromJob) setSource(req *finetunev1.PromoteModelRequest) {
	req.Source = &finetunev1.PromoteModelRequest_JobId{JobId: string(id)}
}

type fromModel string

func (name fromModel) setSource(req *finetunev1.PromoteModelRequest) {
	req.Source = &finetunev1.PromoteModelRequest_Model{Model: string(name)}
}

// FromJob promotes the fine-tuned model of the succeeded job jobID; a job
// that has not succeeded is FAILED_PRECONDITION.
func FromJob(jobID string) PromoteSource { return fromJob(jobID) }

// FromModel promotes the model named name directly.
func FromModel(name string) PromoteSource { return fromModel(name) }

// PromoteModel makes source the model the plain (not split) tier serves from
// its next request on, and returns the updated tier (Tier) and the model it
// served before (PreviousModel). The generated call is
// client.FineTuneServiceClient.PromoteModel.
//
//	client.PromoteModel(ctx, "fast", finetune.FromJob(job.GetId()))
func (c *Client) PromoteModel(ctx context.Context, tier string, source PromoteSource) (*PromoteModelResponse, error) {
	req := &finetunev1.PromoteModelRequest{Tier: tier}
	if source != nil {
		source.setSource(req)
	}
	return c.FineTuneServiceClient.PromoteModel(ctx, req)
}

// RecordFeedback rates the served response responseID (Completion.ResponseId)
// RatingUp or RatingDown, replacing an earlier rating of it, and returns the
// tier and arm that served it. An unknown id is NOT_FOUND. The generated call
// is client.FineTuneServiceClient.RecordFeedback.
func (c *Client) RecordFeedback(ctx context.Context, responseID string, rating Rating) (*RecordFeedbackResponse, error) {
	return c.FineTuneServiceClient.RecordFeedback(ctx,
		&finetunev1.RecordFeedbackRequest{ResponseId: responseID, Rating: rating})
}

// GetTierStats returns the serving statistics of tier (a split tier reports
// its arms), or of every tier when tier is "": one row per (tier, split)
// pair that served, by tier name. The generated call is
// client.FineTuneServiceClient.GetTierStats.
func (c *Client) GetTierStats(ctx context.Context, tier string) ([]*TierStats, error) {
	resp, err := c.FineTuneServiceClient.GetTierStats(ctx, &finetunev1.GetTierStatsRequest{Tier: tier})
	return resp.GetStats(), err
}
