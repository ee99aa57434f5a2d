//! The ports to the providers: what the core needs from a fine-tuning provider
//! ([`FineTuning`]) and from a chat model ([`chat::Chat`]), in the core's own types, and
//! the retry policy the adapters and the job manager share. The adapters live in the
//! `finetune-providers` crate.

pub mod chat;
pub mod retry;
pub mod telemetry;

pub use retry::RetryPolicy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::domain::job::{EventKind, Hyperparameters, JobError, JobState, Method, Metrics};
use crate::error::Error;
pub use crate::error::{Refusal, UpstreamError};

/// What the training lifecycle needs from a fine-tuning provider, in the core's own
/// terms: the adapter translates its wire format (OpenAI's statuses, event kinds, `"auto"`
/// hyperparameters, method objects) into these types, so the job core never reads it.
///
/// Implementations never retry non-idempotent creates themselves; the job manager
/// makes creation safe through the request-id metadata lookup.
#[async_trait::async_trait]
pub trait FineTuning: Send + Sync + 'static {
    /// Whether `id` has the form of this provider's job ids (OpenAI's `ftjob-...`), so an
    /// id the store does not know can be looked for upstream.
    fn is_job_id(&self, id: &str) -> bool;
    /// Uploads a JSONL training file.
    async fn upload_file(&self, path: &Path, filename: &str) -> Result<RemoteFile, UpstreamError>;
    /// One page of the training files, newest first.
    async fn list_files(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<RemoteFile>, UpstreamError>;
    /// A file by id; [`UpstreamError::NotFound`] when it was deleted or has expired.
    async fn get_file(&self, id: &str) -> Result<RemoteFile, UpstreamError>;
    /// Creates a job upstream; called once per attempt, never retried by the adapter.
    async fn create_job(&self, job: &NewJob) -> Result<RemoteJob, UpstreamError>;
    /// The job `id` as the provider reports it now; [`UpstreamError::NotFound`] when unknown.
    async fn get_job(&self, id: &str) -> Result<RemoteJob, UpstreamError>;
    /// One page of jobs, newest first, optionally filtered by metadata `key=value` pairs.
    async fn list_jobs(
        &self,
        after: Option<&str>,
        limit: u32,
        metadata: &[(String, String)],
    ) -> Result<Page<RemoteJob>, UpstreamError>;
    /// Asks the provider to cancel `id`; returns the job as it stands after the request.
    async fn cancel_job(&self, id: &str) -> Result<RemoteJob, UpstreamError>;
    /// One page of events, newest first; `after` pages towards older events.
    async fn list_events(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<RemoteEvent>, UpstreamError>;
    /// One page of checkpoints, newest first.
    async fn list_checkpoints(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<RemoteCheckpoint>, UpstreamError>;
    /// The file to upload for the dataset at `path` (SHA-256 `sha256`): the provider's
    /// own rules of what a training file may hold applied, in a temporary copy under
    /// `scratch` when they change anything. By default the file itself.
    async fn prepare_upload(
        &self,
        path: &Path,
        sha256: &str,
        _scratch: &Path,
    ) -> Result<PreparedUpload, Error> {
        Ok(PreparedUpload {
            path: path.to_owned(),
            sha256: sha256.to_owned(),
            temporary: false,
        })
    }
}

/// A dataset file as it will be uploaded (see [`FineTuning::prepare_upload`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedUpload {
    /// The file to upload.
    pub path: PathBuf,
    /// The SHA-256 of what is uploaded: the key of the remembered upload.
    pub sha256: String,
    /// A copy to delete once uploaded.
    pub temporary: bool,
}

/// One page of a provider's list, newest first.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, newest first.
    pub data: Vec<T>,
    /// Whether older items follow (ask for them with `after = last_id`).
    pub has_more: bool,
    /// The id to page on from (the last item's).
    pub last_id: Option<String>,
}

/// A training file the provider holds. Times are unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteFile {
    /// The provider's file id, which a job names as its training file.
    pub id: String,
    /// Size in bytes.
    pub bytes: u64,
    /// The name given at upload.
    pub filename: String,
    /// The provider refused the file: it cannot be trained from.
    pub rejected: bool,
    /// When the provider deletes it; None for a file kept until deleted.
    pub expires_at: Option<i64>,
}

/// A job to create upstream. `None` hyperparameters are left to the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The base model to fine-tune.
    pub model: String,
    /// The uploaded training file's id.
    pub training_file: String,
    /// The uploaded validation file's id, if any.
    pub validation_file: Option<String>,
    /// Text the provider adds to the fine-tuned model's name.
    pub suffix: Option<String>,
    /// Seed for a reproducible run; None lets the provider pick.
    pub seed: Option<i64>,
    /// Supervised or DPO.
    pub method: Method,
    /// The requested values; each `None` is left to the provider.
    pub hyperparameters: Hyperparameters,
    /// Tags stored with the job upstream (the job manager's request id goes here).
    pub metadata: BTreeMap<String, String>,
}

/// A job as the provider reports it. Times are unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteJob {
    /// The provider's job id (OpenAI's `ftjob-...`).
    pub id: String,
    /// The base model being fine-tuned.
    pub model: String,
    /// The provider's status in the core's terms.
    pub state: JobState,
    /// The provider's own word for the state, shown beside ours.
    pub status: String,
    /// When the job was created.
    pub created_at: i64,
    /// When the job ended, once it has.
    pub finished_at: Option<i64>,
    /// Only while the job runs.
    pub estimated_finish: Option<i64>,
    /// The model produced, once the job succeeded.
    pub fine_tuned_model: Option<String>,
    /// Tokens billed for training, once known.
    pub trained_tokens: Option<u64>,
    /// The training file's id.
    pub training_file: String,
    /// The validation file's id, if any.
    pub validation_file: Option<String>,
    /// Supervised or DPO.
    pub method: Method,
    /// The values in effect; `None` where the provider has not settled one yet.
    pub hyperparameters: Hyperparameters,
    /// Why the job failed, when it did.
    pub error: Option<JobError>,
    /// The seed used for training.
    pub seed: Option<i64>,
    /// The suffix given at creation.
    pub suffix: Option<String>,
    /// The tags given at creation.
    pub metadata: BTreeMap<String, String>,
}

/// An event of a job's upstream log. Times are unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteEvent {
    /// The provider's event id: the cursor for paging and the key that keeps events once.
    pub id: String,
    /// When the event happened.
    pub created_at: i64,
    /// The provider's severity (`info`, `warn`, `error`), kept as sent.
    pub level: String,
    /// Human-readable text of the event.
    pub message: String,
    /// Message, Metrics (with `metrics`), or Unknown for a kind this service does not know.
    pub kind: EventKind,
    /// The step's metrics, for a metrics event.
    pub metrics: Option<Metrics>,
    /// The step of a message that only announces a checkpoint the checkpoint list gives
    /// in full.
    pub announces_checkpoint: Option<u64>,
}

/// A checkpoint of a running or finished job. Times are unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteCheckpoint {
    /// The provider's checkpoint id.
    pub id: String,
    /// When it was saved.
    pub created_at: i64,
    /// The checkpoint's model name, usable for serving.
    pub model: String,
    /// The training step at which it was saved.
    pub step: u64,
    /// The metrics at that step.
    pub metrics: Metrics,
}
