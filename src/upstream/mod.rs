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

use crate::error::Error;

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

/// A provider call that failed, classified for retries and for the gRPC mapping.
/// Messages are the provider's own (never containing our key) or our description.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// 429: slow down; `retry_after` from `retry-after-ms` / `Retry-After` when given.
    #[error("{provider} rate limit: {message}")]
    RateLimited {
        provider: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    /// 5xx, 529, connection failures and timeouts: the provider is unavailable.
    #[error("{provider} unavailable: {message}")]
    Unavailable {
        provider: &'static str,
        status: Option<u16>,
        message: String,
    },
    /// Other 4xx (400, 408, 409, 422, ...): the request was refused; `code`/`param` are the provider's.
    #[error("{provider} rejected the request: {message}")]
    Rejected {
        provider: &'static str,
        status: u16,
        code: Option<String>,
        param: Option<String>,
        message: String,
    },
    /// 404.
    #[error("{provider}: {message}")]
    NotFound {
        provider: &'static str,
        message: String,
    },
    /// 401/403: the key is missing, wrong or lacks permission.
    #[error("{provider} authentication failed: {message}")]
    Auth {
        provider: &'static str,
        status: u16,
        message: String,
    },
    /// The response could not be decoded.
    #[error("{provider} sent an unreadable response: {message}")]
    Protocol {
        provider: &'static str,
        message: String,
    },
    /// A local failure while preparing the call (for example reading the file to upload).
    #[error("{message}")]
    Local {
        provider: &'static str,
        message: String,
    },
    /// A create (job, file, upload) was sent but its answer was lost or unreadable: the
    /// connection broke or timed out after sending, or a 2xx body could not be decoded.
    /// The provider may have done the work; only a look-up can tell.
    #[error("{provider} may have done it, but its answer was lost: {message}")]
    Unconfirmed {
        provider: &'static str,
        message: String,
    },
}

impl UpstreamError {
    /// Whether the official SDKs would retry the call (connection errors, 408, 409, 429, 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            UpstreamError::RateLimited { .. }
                | UpstreamError::Unavailable { .. }
                | UpstreamError::Unconfirmed { .. }
        ) || matches!(
            self,
            UpstreamError::Rejected {
                status: 408 | 409,
                ..
            }
        )
    }
}

impl UpstreamError {
    /// Whether a create that failed this way may still have taken effect upstream, so
    /// that it must be looked for before anything is released or created again: its
    /// answer was lost after sending ([`UpstreamError::Unconfirmed`]), or the provider
    /// failed while handling it (500, 502, 504). A refusal (4xx, 429), a 503 and a
    /// connection that never opened did nothing.
    pub fn may_have_taken_effect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unconfirmed { .. }
                | UpstreamError::Unavailable {
                    status: Some(500 | 502 | 504),
                    ..
                }
        )
    }

    /// The provider the error came from (`openai`, `anthropic`).
    pub fn provider(&self) -> &'static str {
        match self {
            UpstreamError::RateLimited { provider, .. }
            | UpstreamError::Unavailable { provider, .. }
            | UpstreamError::Rejected { provider, .. }
            | UpstreamError::NotFound { provider, .. }
            | UpstreamError::Auth { provider, .. }
            | UpstreamError::Protocol { provider, .. }
            | UpstreamError::Local { provider, .. }
            | UpstreamError::Unconfirmed { provider, .. } => provider,
        }
    }

    /// The error with "(gave up after N attempts)" added to its message when `attempts`
    /// is more than one, so callers know retries happened.
    pub fn after_attempts(mut self, attempts: u32) -> UpstreamError {
        if attempts > 1 {
            match &mut self {
                UpstreamError::RateLimited { message, .. }
                | UpstreamError::Unavailable { message, .. }
                | UpstreamError::Rejected { message, .. }
                | UpstreamError::NotFound { message, .. }
                | UpstreamError::Auth { message, .. }
                | UpstreamError::Protocol { message, .. }
                | UpstreamError::Local { message, .. }
                | UpstreamError::Unconfirmed { message, .. } => {
                    message.push_str(&format!(" (gave up after {attempts} attempts)"));
                }
            }
        }
        self
    }
}

impl From<UpstreamError> for Error {
    fn from(e: UpstreamError) -> Error {
        Error::Upstream(e)
    }
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
