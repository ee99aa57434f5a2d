package finetune

import finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"

// The generated messages and enums the client's methods take and return, by
// their short names, so that common use needs no import of the generated
// package. They are aliases: finetune.Job and finetunev1.Job are one type,
// usable with the generated API and with proto functions alike.
type (
	// Jobs.
	Job                   = finetunev1.Job
	JobError              = finetunev1.JobError
	JobEvent              = finetunev1.JobEvent
	StepMetrics           = finetunev1.StepMetrics
	Checkpoint            = finetunev1.Checkpoint
	Hyperparameters       = finetunev1.Hyperparameters
	StartTrainingRequest  = finetunev1.StartTrainingRequest
	StartTrainingResponse = finetunev1.StartTrainingResponse
	ListJobsRequest       = finetunev1.ListJobsRequest
	ListJobsResponse      = finetunev1.ListJobsResponse

	// Datasets.
	DatasetSource          = finetunev1.DatasetSource
	ValidateDatasetRequest = finetunev1.ValidateDatasetRequest
	ValidationReport       = finetunev1.ValidationReport
	DatasetSummary         = finetunev1.DatasetSummary
	Problem                = finetunev1.Problem
	AcceptedProblem        = finetunev1.AcceptedProblem
	UploadDatasetResponse  = finetunev1.UploadDatasetResponse

	// Serving.
	ChatMessage            = finetunev1.ChatMessage
	CompleteRequest        = finetunev1.CompleteRequest
	Completion             = finetunev1.Completion
	Usage                  = finetunev1.Usage
	Tier                   = finetunev1.Tier
	Arm                    = finetunev1.Arm
	PromoteModelResponse   = finetunev1.PromoteModelResponse
	RecordFeedbackResponse = finetunev1.RecordFeedbackResponse
	TierStats              = finetunev1.TierStats
	LatencyStats           = finetunev1.LatencyStats
	InferencePrice         = finetunev1.InferencePrice

	// The enums with short-named constants (enums.go).
	JobState       = finetunev1.JobState
	JobEventKind   = finetunev1.JobEventKind
	TrainingMethod = finetunev1.TrainingMethod
	FinishReason   = finetunev1.FinishReason
	ChatRole       = finetunev1.ChatRole
	Rating         = finetunev1.Rating
	Provider       = finetunev1.Provider
	Severity       = finetunev1.Severity
	DatasetFormat  = finetunev1.DatasetFormat
)
