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
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use super::UpstreamError;
use crate::telemetry::Reporter;

/// How hard to retry. The defaults are the official SDKs': 2 retries, 0.5 s doubling to
/// at most 8 s, and a provider's own delay honoured up to 60 s.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
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

    /// Counts one HTTP exchange with `provider` that started at `started`, for the metrics.
    pub(crate) fn observe(
        &self,
        provider: &str,
        started: Instant,
        sent: &Result<reqwest::Response, reqwest::Error>,
    ) {
        if let Some(metrics) = &self.metrics {
            let status = sent.as_ref().ok().map(|r| r.status().as_u16());
            metrics.upstream_request(provider, status, started.elapsed());
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, runs out of retries, or the next
    /// wait would end past `deadline`. The last error is returned, noting how many
    /// attempts were made when there was more than one.
    pub(crate) async fn run<T, F, Fut>(
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
pub(crate) struct Failure {
    pub(crate) error: UpstreamError,
    /// `x-should-retry: true|false`, when the provider sent it.
    pub(crate) should_retry: Option<bool>,
    /// `retry-after-ms` / `Retry-After`, when the provider sent one.
    pub(crate) retry_after: Option<Duration>,
}

impl Failure {
    /// A failure with the retry hints of the response's headers.
    pub(crate) fn from_response(error: UpstreamError, headers: &HeaderMap) -> Failure {
        let should_retry = match headers.get("x-should-retry").map(|v| v.as_bytes()) {
            Some(b"true") => Some(true),
            Some(b"false") => Some(false),
            _ => None,
        };
        Failure {
            error,
            should_retry,
            retry_after: parse_retry_after(headers, std::time::SystemTime::now()),
        }
    }

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
pub(crate) fn attempt_timeout(timeout: Duration, deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(d) => timeout.min(d.saturating_duration_since(Instant::now())),
        None => timeout,
    }
}

/// The delay a 429 asks for: `retry-after-ms` (milliseconds, OpenAI's own), else
/// `Retry-After` as seconds or an HTTP date (relative to `now`; a past date is zero).
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let non_negative = |n: f64| n.is_finite() && n >= 0.0;
    if let Some(ms) = header("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|ms| non_negative(*ms))
    {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = header("retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return non_negative(seconds)
            .then(|| Duration::try_from_secs_f64(seconds).ok())
            .flatten();
    }
    // The three date forms RFC 9110 asks recipients to accept.
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn unavailable() -> UpstreamError {
        UpstreamError::Unavailable {
            provider: "openai",
            status: Some(503),
            message: "overloaded".into(),
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retry_after: Duration::from_millis(50),
            metrics: None,
        }
    }

    #[tokio::test]
    async fn retries_a_retryable_failure_until_it_succeeds() {
        let calls = AtomicU32::new(0);
        let result = fast()
            .run("test", None, || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(Failure::from(unavailable())),
                    _ => Ok(7),
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries_and_says_how_many_attempts() {
        let calls = AtomicU32::new(0);
        let error = fast()
            .run("test", None, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Failure::from(unavailable()))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert!(
            error.to_string().ends_with("(gave up after 4 attempts)"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn does_not_retry_a_refusal_or_a_should_retry_false() {
        let calls = AtomicU32::new(0);
        let refused = UpstreamError::Rejected {
            provider: "openai",
            status: 400,
            code: None,
            param: None,
            message: "bad".into(),
        };
        let _ = fast()
            .run("test", None, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Failure::from(refused.clone()))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let mut headers = HeaderMap::new();
        headers.insert("x-should-retry", "false".parse().unwrap());
        let _ = fast()
            .run("test", None, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Failure::from_response(unavailable(), &headers))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn should_retry_true_retries_a_status_that_normally_is_not() {
        let calls = AtomicU32::new(0);
        let mut headers = HeaderMap::new();
        headers.insert("x-should-retry", "true".parse().unwrap());
        let refused = UpstreamError::Rejected {
            provider: "anthropic",
            status: 400,
            code: None,
            param: None,
            message: "try again".into(),
        };
        let result = fast()
            .run("test", None, || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(Failure::from_response(refused.clone(), &headers)),
                    _ => Ok(()),
                }
            })
            .await;
        assert!(result.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_up_to_the_cap() {
        let policy = RetryPolicy {
            max_retry_after: Duration::from_secs(5),
            ..fast()
        };
        let mut headers = HeaderMap::new();
        headers.insert("retry-after-ms", "3000".parse().unwrap());
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        policy
            .run("test", None, || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(Failure::from_response(unavailable(), &headers)),
                    _ => Ok(()),
                }
            })
            .await
            .unwrap();
        assert_eq!(started.elapsed().as_secs(), 3, "waited as asked");

        // Past the cap, the computed backoff (milliseconds here) is used instead.
        headers.insert("retry-after-ms", "600000".parse().unwrap());
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        policy
            .run("test", None, || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(Failure::from_response(unavailable(), &headers)),
                    _ => Ok(()),
                }
            })
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_starts_that_would_end_past_the_deadline() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after-ms", "40".parse().unwrap());
        let deadline = Instant::now() + Duration::from_millis(30);
        let calls = AtomicU32::new(0);
        let error = fast()
            .run("test", Some(deadline), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Failure::from_response(unavailable(), &headers))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!error.to_string().contains("gave up"), "{error}");
    }
}
