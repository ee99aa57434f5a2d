//! The provider adapters: OpenAI (files, uploads, fine-tuning jobs, chat completions) and
//! Anthropic (Messages), over HTTP with the official SDKs' retry rules. Each implements a
//! port of `finetune-core` and translates its wire format into the core's types.

#![warn(missing_docs)]
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
    /// The bearer key sent with every request (never logged: `Debug` redacts it).
    pub api_key: String,
    /// The API root including `/v1` (the official SDKs' `OPENAI_BASE_URL`).
    pub base_url: String,
    /// Sent as `OpenAI-Organization` when set.
    pub organization: Option<String>,
    /// Sent as `OpenAI-Project` when set.
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
    /// OpenAI's public API root, for a caller without its own `base_url`.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.openai.com/v1";
    /// Files above this size go through the Uploads API in parts.
    pub const DEFAULT_UPLOAD_THRESHOLD_BYTES: u64 = 256 << 20;

    /// A config for `base_url` with OpenAI's defaults: 256 MB upload threshold, 64 MB parts, 600 s timeout, default retries.
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
