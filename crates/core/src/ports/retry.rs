//! Upstream retries, as the official OpenAI and Anthropic SDKs do them: connection
//! errors, timeouts, 408, 409, 429, 5xx and 529 are retried with exponential backoff and
//! jitter (backon), at most `max_retries` times; a `retry-after-ms` / `Retry-After` the
//! provider sends replaces the computed delay when it is at most `max_retry_after`; the
//! `x-should-retry` header, when present, overrides the status; and no retry starts that
//! could not finish before the caller's deadline.
//!
//! Only calls that are safe to repeat go through [`RetryPolicy::run`]: reads, cancels and
//! chat completions. Job creation and file uploads are made safe by the job manager
//! instead (it looks for what the lost attempt created before trying again).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

use super::UpstreamError;
use crate::ports::telemetry::Reporter;

/// How hard to retry. The defaults are the official SDKs': 2 retries, 0.5 s doubling to
/// at most 8 s, and a provider's own delay honoured up to 60 s.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: usize,
    /// Backoff before the first retry; it doubles at each retry, with jitter.
    pub min_delay: Duration,
    /// The longest computed backoff.
    pub max_delay: Duration,
    /// A longer `Retry-After` is not waited for: the computed backoff is used instead.
    pub max_retry_after: Duration,
    /// Where the adapters count their HTTP requests and this policy its retries.
    pub metrics: Option<Reporter>,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            metrics: None,
        }
    }
}

impl RetryPolicy {
    /// No retries at all: every failure is returned as it happened.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, runs out of retries, or the next
    /// wait would end past `deadline`. The last error is returned, noting how many
    /// attempts were made when there was more than one.
    pub async fn run<T, F, Fut>(
        &self,
        what: &'static str,
        deadline: Option<Instant>,
        attempt: F,
    ) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let attempts = AtomicU32::new(1);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter();
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(Failure::retryable)
            .adjust(|failure, next| {
                let wait = match failure.retry_after {
                    Some(asked) if asked <= self.max_retry_after => Some(asked),
                    _ => next,
                };
                // `next` is None once the retries are used up, whatever the provider asked.
                next.and(wait)
                    .filter(|wait| deadline.is_none_or(|d| Instant::now() + *wait < d))
            })
            .notify(|failure, wait| {
                if let Some(metrics) = &self.metrics {
                    metrics.upstream_retry(failure.error.provider());
                }
                tracing::warn!(
                    provider = failure.error.provider(),
                    what,
                    attempt = attempts.load(Ordering::Relaxed),
                    wait_ms = wait.as_millis() as u64,
                    error = %failure.error,
                    "upstream call failed; retrying"
                );
                attempts.fetch_add(1, Ordering::Relaxed);
            })
            .await
            .map_err(|failure| {
                failure
                    .error
                    .after_attempts(attempts.load(Ordering::Relaxed))
            })
    }
}

/// One failed attempt: the error, and what the response said about retrying it.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong, returned if the attempt is not retried.
    pub error: UpstreamError,
    /// `x-should-retry: true|false`, when the provider sent it.
    pub should_retry: Option<bool>,
    /// `retry-after-ms` / `Retry-After`, when the provider sent one.
    pub retry_after: Option<Duration>,
}

impl Failure {
    fn retryable(&self) -> bool {
        self.should_retry
            .unwrap_or_else(|| self.error.is_retryable())
    }
}

impl From<UpstreamError> for Failure {
    fn from(error: UpstreamError) -> Failure {
        let retry_after = match &error {
            UpstreamError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        };
        Failure {
            error,
            should_retry: None,
            retry_after,
        }
    }
}

/// The time left before `deadline`, capped at `timeout`: the deadline of one attempt.
pub fn attempt_timeout(timeout: Duration, deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(d) => timeout.min(d.saturating_duration_since(Instant::now())),
        None => timeout,
    }
}
