//! Provider ports: the traits the core owns, and their adapters (OpenAI today).

pub mod anthropic;
pub mod chat;
mod http;
pub mod openai;
pub mod retry;
pub mod types;

pub use retry::RetryPolicy;

use std::path::Path;
use std::time::Duration;

pub use crate::error::UpstreamError;

/// What the training lifecycle needs from a fine-tuning provider.
///
/// Implementations never retry non-idempotent creates themselves; the job manager
/// makes creation safe through the request-id metadata lookup.
#[tonic::async_trait]
pub trait FineTuning: Send + Sync + 'static {
    /// Uploads a JSONL file with purpose `fine-tune` (the Files API, or the Uploads API
    /// in parts for files over the configured threshold).
    async fn upload_file(
        &self,
        path: &Path,
        filename: &str,
    ) -> Result<types::FileObject, UpstreamError>;
    /// One page of the `fine-tune` files, newest first.
    async fn list_files(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<types::Page<types::FileObject>, UpstreamError>;
    /// A file by id; [`UpstreamError::NotFound`] when it was deleted or has expired.
    async fn get_file(&self, id: &str) -> Result<types::FileObject, UpstreamError>;
    async fn create_job(
        &self,
        request: &types::CreateJobRequest,
    ) -> Result<types::Job, UpstreamError>;
    async fn get_job(&self, id: &str) -> Result<types::Job, UpstreamError>;
    /// One page of jobs, newest first, optionally filtered by metadata `key=value` pairs.
    async fn list_jobs(
        &self,
        after: Option<&str>,
        limit: u32,
        metadata: &[(String, String)],
    ) -> Result<types::Page<types::Job>, UpstreamError>;
    async fn cancel_job(&self, id: &str) -> Result<types::Job, UpstreamError>;
    /// One page of events, newest first; `after` pages towards older events.
    async fn list_events(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<types::Page<types::JobEvent>, UpstreamError>;
    async fn list_checkpoints(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<types::Page<types::Checkpoint>, UpstreamError>;
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
