//! The provider adapters: OpenAI (files, uploads, fine-tuning jobs, chat completions) and
//! Anthropic (Messages), over HTTP with the official SDKs' retry rules. Each implements a
//! port of `finetune-core` and translates its wire format into the core's types.

#![forbid(unsafe_code)]

pub mod anthropic;
mod http;
pub mod openai;
mod openai_fine_tuning;
pub mod types;

pub use http::parse_retry_after;

use std::time::Duration;

use finetune_core::ports::retry::RetryPolicy;

/// Where and how to reach OpenAI. The caller gives every setting (the server reads them
/// in its configuration); the adapter reads no environment.
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
    /// Files above this size go through the Uploads API in parts.
    pub const DEFAULT_UPLOAD_THRESHOLD_BYTES: u64 = 256 << 20;

    pub fn new(api_key: impl Into<String>, base_url: impl Into<String>) -> OpenAiConfig {
        OpenAiConfig {
            api_key: api_key.into(),
            base_url: base_url.into(),
            organization: None,
            project: None,
            upload_threshold_bytes: OpenAiConfig::DEFAULT_UPLOAD_THRESHOLD_BYTES,
            part_size_bytes: 64 << 20,
            timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
        }
    }
}
