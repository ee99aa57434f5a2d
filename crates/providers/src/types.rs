//! OpenAI's wire types for files, uploads and fine-tuning jobs, decoded tolerantly as
//! the real API answers: unknown fields are ignored, unknown statuses kept as raw
//! strings, `error: {}` means no error, and numbers may come as `"auto"`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A page of a list endpoint: `{object: "list", data, has_more, first_id?, last_id?}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    /// The items of this page, in the endpoint's order.
    pub data: Vec<T>,
    /// Whether another page follows (request it with `after = last_id`).
    #[serde(default)]
    pub has_more: bool,
    /// Id of the first item, when the endpoint reports it.
    #[serde(default)]
    pub first_id: Option<String>,
    /// Id of the last item: the `after` cursor of the next page.
    #[serde(default)]
    pub last_id: Option<String>,
}

/// `OpenAIFile`.
#[derive(Debug, Clone, Deserialize)]
pub struct FileObject {
    /// The file id (`file-...`) that jobs name as `training_file`.
    pub id: String,
    /// Size in bytes.
    #[serde(default)]
    pub bytes: u64,
    /// Unix seconds of the upload.
    #[serde(default)]
    pub created_at: i64,
    /// The name given at upload.
    #[serde(default)]
    pub filename: String,
    /// What the file is for; this service uploads `fine-tune`.
    #[serde(default)]
    pub purpose: String,
    /// Deprecated processing status (`uploaded`, `processed`, `error`), when sent.
    #[serde(default)]
    pub status: Option<String>,
    /// Unix seconds after which OpenAI deletes the file (set by `expires_after`); None
    /// for a file kept until deleted.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// `Upload` (the Uploads API).
#[derive(Debug, Clone, Deserialize)]
pub struct UploadObject {
    /// The upload id (`upload_...`) that parts and completion name.
    pub id: String,
    /// `pending`, `completed`, `cancelled` or `expired`, kept raw.
    #[serde(default)]
    pub status: String,
    /// Total size announced at creation.
    #[serde(default)]
    pub bytes: u64,
    /// The file made from the parts, once the upload is completed.
    #[serde(default)]
    pub file: Option<FileObject>,
}

/// `UploadPart`.
#[derive(Debug, Clone, Deserialize)]
pub struct UploadPart {
    /// The part id, listed in order when the upload is completed.
    pub id: String,
}

/// A hyperparameter that is `"auto"` or a number. Whole numbers are sent as integers
/// (`batch_size: 2`, not `2.0`), as the spec types `batch_size` and `n_epochs`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum AutoOr {
    /// A number; whole numbers are sent as integers.
    Number(f64),
    /// The string `"auto"`: OpenAI picks the value.
    Auto(AutoTag),
}

impl Serialize for AutoOr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            AutoOr::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => s.serialize_i64(n as i64),
            AutoOr::Number(n) => s.serialize_f64(n),
            AutoOr::Auto(tag) => tag.serialize(s),
        }
    }
}

/// The literal string `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoTag {
    /// `"auto"`.
    Auto,
}

impl AutoOr {
    /// The number, or None for `"auto"`.
    pub fn value(self) -> Option<f64> {
        match self {
            AutoOr::Number(n) => Some(n),
            AutoOr::Auto(_) => None,
        }
    }
}

/// Hyperparameters as sent and as echoed back (each `"auto"` or a number).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    /// Passes over the training file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_epochs: Option<AutoOr>,
    /// Examples per training batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<AutoOr>,
    /// Scale applied to OpenAI's base learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate_multiplier: Option<AutoOr>,
    /// DPO only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<AutoOr>,
}

/// `FineTuneMethod` with the supervised or dpo branch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Method {
    /// `supervised` or `dpo` (the wire's `type`), kept raw.
    #[serde(rename = "type")]
    pub kind: String,
    /// Settings of a supervised job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervised: Option<MethodParams>,
    /// Settings of a DPO job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpo: Option<MethodParams>,
}

/// The settings of one method branch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodParams {
    /// The hyperparameters chosen for this method, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperparameters: Option<Hyperparameters>,
}

impl Method {
    /// The method's hyperparameters, whichever branch carries them.
    pub fn hyperparameters(&self) -> Option<&Hyperparameters> {
        self.supervised
            .as_ref()
            .or(self.dpo.as_ref())
            .and_then(|p| p.hyperparameters.as_ref())
    }
}

/// `CreateFineTuningJobRequest`, as this service sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreateJobRequest {
    /// The base model to fine-tune, e.g. `gpt-4o-mini-2024-07-18`.
    pub model: String,
    /// The uploaded training file's id.
    pub training_file: String,
    /// The uploaded validation file's id, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_file: Option<String>,
    /// Up to 64 characters added to the fine-tuned model's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Seed for a reproducible run; OpenAI picks one when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// The training method and its hyperparameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Key/value tags stored with the job (sent only when not empty).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// `FineTuningJob.error`; `{}` (all fields absent) means no error.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct JobError {
    /// Machine-readable failure code, e.g. `invalid_training_file`.
    #[serde(default)]
    pub code: Option<String>,
    /// Human-readable reason for the failure.
    #[serde(default)]
    pub message: Option<String>,
    /// The request parameter at fault, e.g. `training_file`.
    #[serde(default)]
    pub param: Option<String>,
}

impl JobError {
    /// True for `{}`: neither a code nor a message.
    pub fn is_empty(&self) -> bool {
        self.code.is_none() && self.message.is_none()
    }
}

/// `FineTuningJob`.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    /// The job id (`ftjob-...`).
    pub id: String,
    /// The base model being fine-tuned.
    #[serde(default)]
    pub model: String,
    /// Unix seconds of creation.
    #[serde(default)]
    pub created_at: i64,
    /// Unix seconds at which the job ended, once it has.
    #[serde(default)]
    pub finished_at: Option<i64>,
    /// The name of the model produced, once the job succeeded.
    #[serde(default)]
    pub fine_tuned_model: Option<String>,
    /// Kept raw: `paused` and future statuses must not fail decoding.
    #[serde(default)]
    pub status: String,
    /// The training file's id.
    #[serde(default)]
    pub training_file: String,
    /// The validation file's id, if any.
    #[serde(default)]
    pub validation_file: Option<String>,
    /// Deprecated top-level hyperparameters; prefer [`Job::effective_hyperparameters`].
    #[serde(default)]
    pub hyperparameters: Option<Hyperparameters>,
    /// The training method and its hyperparameters.
    #[serde(default)]
    pub method: Option<Method>,
    /// Tokens billed for training, once known.
    #[serde(default)]
    pub trained_tokens: Option<u64>,
    /// Why the job failed; see [`Job::failure`], which treats `{}` as no error.
    #[serde(default)]
    pub error: Option<JobError>,
    /// Ids of the result files (training metrics CSV).
    #[serde(default)]
    pub result_files: Vec<String>,
    /// The seed used for training.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Unix seconds at which OpenAI expects the job to finish.
    #[serde(default)]
    pub estimated_finish: Option<i64>,
    /// The key/value tags given at creation.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The `suffix` given at creation.
    #[serde(default)]
    pub user_provided_suffix: Option<String>,
}

impl Job {
    /// The error, unless it is absent, null or `{}`.
    pub fn failure(&self) -> Option<&JobError> {
        self.error.as_ref().filter(|e| !e.is_empty())
    }

    /// The effective hyperparameters: the method's, else the deprecated top-level ones.
    pub fn effective_hyperparameters(&self) -> Option<&Hyperparameters> {
        self.method
            .as_ref()
            .and_then(Method::hyperparameters)
            .or(self.hyperparameters.as_ref())
    }
}

/// `FineTuningJobEvent`. `data` is untyped in the spec: null, `{}` or metrics.
#[derive(Debug, Clone, Deserialize)]
pub struct JobEvent {
    /// The event id (`ftevent-...`): the cursor for the next page.
    pub id: String,
    /// Unix seconds of the event.
    #[serde(default)]
    pub created_at: i64,
    /// `info`, `warn` or `error`, kept raw.
    #[serde(default)]
    pub level: String,
    /// Human-readable text of the event.
    #[serde(default)]
    pub message: String,
    /// `message` or `metrics` (the wire's `type`), kept raw.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Untyped payload; for a `metrics` event, see [`JobEvent::metrics`].
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// Metrics of a step, from a metrics event's `data` or a checkpoint's `metrics`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StepMetrics {
    /// The training step these metrics are for.
    #[serde(default)]
    pub step: Option<u64>,
    /// Steps in the whole run.
    #[serde(default)]
    pub total_steps: Option<u64>,
    /// Training loss at this step.
    #[serde(default)]
    pub train_loss: Option<f64>,
    /// Share of training tokens predicted correctly at this step.
    #[serde(default)]
    pub train_mean_token_accuracy: Option<f64>,
    /// Validation loss on a batch at this step.
    #[serde(default)]
    pub valid_loss: Option<f64>,
    /// Share of validation tokens predicted correctly on a batch at this step.
    #[serde(default)]
    pub valid_mean_token_accuracy: Option<f64>,
    /// Validation loss on the whole validation file (reported at epoch ends).
    #[serde(default)]
    pub full_valid_loss: Option<f64>,
    /// Token accuracy on the whole validation file (reported at epoch ends).
    #[serde(default)]
    pub full_valid_mean_token_accuracy: Option<f64>,
}

impl JobEvent {
    /// The step metrics of a `metrics` event.
    pub fn metrics(&self) -> Option<StepMetrics> {
        if self.kind.as_deref() != Some("metrics") {
            return None;
        }
        self.data
            .as_ref()
            .and_then(|d| serde_json::from_value(d.clone()).ok())
    }

    /// The step of OpenAI's "Checkpoint created at step N ..." message, which only
    /// announces what the checkpoints list gives in full (id, model name, metrics).
    pub(crate) fn announced_checkpoint_step(&self) -> Option<u64> {
        if self.kind.as_deref().is_some_and(|k| k != "message") {
            return None;
        }
        let rest = self.message.strip_prefix("Checkpoint created at step ")?;
        let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
        digits.parse().ok()
    }
}

/// `FineTuningJobCheckpoint`.
#[derive(Debug, Clone, Deserialize)]
pub struct Checkpoint {
    /// The checkpoint id (`ftckpt_...`).
    pub id: String,
    /// Unix seconds of creation.
    #[serde(default)]
    pub created_at: i64,
    /// The model name under which this checkpoint can be served.
    #[serde(default)]
    pub fine_tuned_model_checkpoint: String,
    /// The training step at which it was saved.
    #[serde(default)]
    pub step_number: u64,
    /// The job that produced it.
    #[serde(default)]
    pub fine_tuning_job_id: String,
    /// The metrics at that step.
    #[serde(default)]
    pub metrics: StepMetrics,
}

/// OpenAI's error envelope: `{"error": {message, type, param, code}}` (plus, on some
/// 404s, a top-level `detail`, ignored).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ErrorEnvelope {
    /// The error itself.
    pub error: ApiError,
}

/// The body of OpenAI's error envelope.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApiError {
    /// Human-readable description (may quote the request, so never echoed to clients).
    #[serde(default)]
    pub message: String,
    /// Error class (the wire's `type`), e.g. `invalid_request_error`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The request parameter at fault, if any.
    #[serde(default)]
    pub param: Option<String>,
    /// Machine-readable code, e.g. `rate_limit_exceeded`.
    #[serde(default)]
    pub code: Option<String>,
}
