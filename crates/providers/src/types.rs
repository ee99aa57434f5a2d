//! OpenAI's wire types for files, uploads and fine-tuning jobs, decoded tolerantly as
//! the real API answers: unknown fields are ignored, unknown statuses kept as raw
//! strings, `error: {}` means no error, and numbers may come as `"auto"`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A page of a list endpoint: `{object: "list", data, has_more, first_id?, last_id?}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub first_id: Option<String>,
    #[serde(default)]
    pub last_id: Option<String>,
}

/// `OpenAIFile`.
#[derive(Debug, Clone, Deserialize)]
pub struct FileObject {
    pub id: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub filename: String,
    #[serde(default)]
    pub purpose: String,
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
    pub id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub file: Option<FileObject>,
}

/// `UploadPart`.
#[derive(Debug, Clone, Deserialize)]
pub struct UploadPart {
    pub id: String,
}

/// A hyperparameter that is `"auto"` or a number. Whole numbers are sent as integers
/// (`batch_size: 2`, not `2.0`), as the spec types `batch_size` and `n_epochs`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum AutoOr {
    Number(f64),
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
    Auto,
}

impl AutoOr {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_epochs: Option<AutoOr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<AutoOr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate_multiplier: Option<AutoOr>,
    /// DPO only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<AutoOr>,
}

/// `FineTuneMethod` with the supervised or dpo branch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Method {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervised: Option<MethodParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpo: Option<MethodParams>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodParams {
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
    pub model: String,
    pub training_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// `FineTuningJob.error`; `{}` (all fields absent) means no error.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct JobError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
}

impl JobError {
    pub fn is_empty(&self) -> bool {
        self.code.is_none() && self.message.is_none()
    }
}

/// `FineTuningJob`.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub finished_at: Option<i64>,
    #[serde(default)]
    pub fine_tuned_model: Option<String>,
    /// Kept raw: `paused` and future statuses must not fail decoding.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub training_file: String,
    #[serde(default)]
    pub validation_file: Option<String>,
    #[serde(default)]
    pub hyperparameters: Option<Hyperparameters>,
    #[serde(default)]
    pub method: Option<Method>,
    #[serde(default)]
    pub trained_tokens: Option<u64>,
    #[serde(default)]
    pub error: Option<JobError>,
    #[serde(default)]
    pub result_files: Vec<String>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub estimated_finish: Option<i64>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
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
    pub id: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// Metrics of a step, from a metrics event's `data` or a checkpoint's `metrics`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StepMetrics {
    #[serde(default)]
    pub step: Option<u64>,
    #[serde(default)]
    pub total_steps: Option<u64>,
    #[serde(default)]
    pub train_loss: Option<f64>,
    #[serde(default)]
    pub train_mean_token_accuracy: Option<f64>,
    #[serde(default)]
    pub valid_loss: Option<f64>,
    #[serde(default)]
    pub valid_mean_token_accuracy: Option<f64>,
    #[serde(default)]
    pub full_valid_loss: Option<f64>,
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
    pub fn announced_checkpoint_step(&self) -> Option<u64> {
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
    pub id: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub fine_tuned_model_checkpoint: String,
    #[serde(default)]
    pub step_number: u64,
    #[serde(default)]
    pub fine_tuning_job_id: String,
    #[serde(default)]
    pub metrics: StepMetrics,
}

/// OpenAI's error envelope: `{"error": {message, type, param, code}}` (plus, on some
/// 404s, a top-level `detail`, ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ApiError,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}
