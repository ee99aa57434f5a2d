//! Provider ports: the traits the core owns, and their adapters (OpenAI today).

pub mod anthropic;
pub mod chat;
mod http;
pub mod openai;
mod openai_fine_tuning;
pub mod retry;
pub mod types;

pub use retry::RetryPolicy;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub use crate::error::UpstreamError;
use crate::jobs::model::{EventKind, Hyperparameters, JobError, JobState, Method, Metrics};

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
    async fn create_job(&self, job: &NewJob) -> Result<RemoteJob, UpstreamError>;
    async fn get_job(&self, id: &str) -> Result<RemoteJob, UpstreamError>;
    /// One page of jobs, newest first, optionally filtered by metadata `key=value` pairs.
    async fn list_jobs(
        &self,
        after: Option<&str>,
        limit: u32,
        metadata: &[(String, String)],
    ) -> Result<Page<RemoteJob>, UpstreamError>;
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
}

/// One page of a provider's list, newest first.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    /// The id to page on from (the last item's).
    pub last_id: Option<String>,
}

/// A training file the provider holds. Times are unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteFile {
    pub id: String,
    pub bytes: u64,
    pub filename: String,
    /// The provider refused the file: it cannot be trained from.
    pub rejected: bool,
    /// When the provider deletes it; None for a file kept until deleted.
    pub expires_at: Option<i64>,
}

/// A job to create upstream. `None` hyperparameters are left to the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub model: String,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub suffix: Option<String>,
    pub seed: Option<i64>,
    pub method: Method,
    pub hyperparameters: Hyperparameters,
    pub metadata: BTreeMap<String, String>,
}

/// A job as the provider reports it. Times are unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteJob {
    pub id: String,
    pub model: String,
    pub state: JobState,
    /// The provider's own word for the state, shown beside ours.
    pub status: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Only while the job runs.
    pub estimated_finish: Option<i64>,
    pub fine_tuned_model: Option<String>,
    pub trained_tokens: Option<u64>,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub method: Method,
    /// The values in effect; `None` where the provider has not settled one yet.
    pub hyperparameters: Hyperparameters,
    pub error: Option<JobError>,
    pub seed: Option<i64>,
    pub suffix: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// An event of a job's upstream log. Times are unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteEvent {
    pub id: String,
    pub created_at: i64,
    pub level: String,
    pub message: String,
    /// Message, Metrics (with `metrics`), or Unknown for a kind this service does not know.
    pub kind: EventKind,
    pub metrics: Option<Metrics>,
    /// The step of a message that only announces a checkpoint the checkpoint list gives
    /// in full.
    pub announces_checkpoint: Option<u64>,
}

/// A checkpoint of a running or finished job. Times are unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteCheckpoint {
    pub id: String,
    pub created_at: i64,
    /// The checkpoint's model name, usable for serving.
    pub model: String,
    pub step: u64,
    pub metrics: Metrics,
}

/// Where and how to reach OpenAI. The key comes only from the environment.
#[derive(Clone)]
pub struct OpenAiConfig {
    pub api_key: String,
    pub base_url: String,
    pub organization: Option<String>,
    pub project: Option<String>,
    /// Files larger than this go through the Uploads API in parts.
    pub upload_threshold_bytes: u64,
    /// Size of each Uploads API part (OpenAI allows at most 64 MB).
    pub part_size_bytes: u64,
    /// Deadline of one HTTP call.
    pub timeout: Duration,
    /// Retries of the calls that are safe to repeat.
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("api_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("organization", &self.organization)
            .field("project", &self.project)
            .field("upload_threshold_bytes", &self.upload_threshold_bytes)
            .field("part_size_bytes", &self.part_size_bytes)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl OpenAiConfig {
    pub const DEFAULT_BASE_URL: &'static str = "https://api.openai.com/v1";

    pub fn new(api_key: impl Into<String>, base_url: impl Into<String>) -> OpenAiConfig {
        OpenAiConfig {
            api_key: api_key.into(),
            base_url: base_url.into(),
            organization: None,
            project: None,
            upload_threshold_bytes: 256 << 20,
            part_size_bytes: 64 << 20,
            timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
        }
    }
}
