//! Plumbing both provider adapters share: the TLS provider, and describing failures
//! without leaking keys or response bodies.

use std::sync::Once;

use regex::Regex;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

use finetune_core::ports::retry::{Failure, RetryPolicy};
use finetune_core::ports::{Refusal, UpstreamError};

/// Provider messages are cut to this many characters: enough for any real one.
pub(crate) const MAX_MESSAGE_CHARS: usize = 1000;

/// Removes secrets from provider text: our key verbatim, and anything matching the
/// provider's key shapes (and masked echoes of keys).
pub(crate) struct Redactor {
    key: String,
    patterns: Regex,
}

impl Redactor {
    /// `patterns` is a regex of key shapes to remove besides the key itself.
    pub(crate) fn new(key: &str, patterns: &str) -> Redactor {
        Redactor {
            key: key.to_owned(),
            patterns: Regex::new(patterns).expect("a valid regex"),
        }
    }

    pub(crate) fn clean(&self, text: &str) -> String {
        let text = if self.key.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.key, "<redacted>")
        };
        let text = self.patterns.replace_all(&text, "<redacted>");
        truncate(&text, MAX_MESSAGE_CHARS)
    }
}

/// The failure a non-2xx `code` is, the same for every provider: 429 a rate limit (with
/// the delay the headers ask for), 401/403 authentication, 404 not found, 5xx (529 too)
/// unavailable, any other 4xx the refusal `rejected` builds, anything else a protocol error.
pub(crate) fn status_error(
    provider: &'static str,
    code: u16,
    headers: &HeaderMap,
    message: String,
    rejected: impl FnOnce(String) -> UpstreamError,
) -> UpstreamError {
    match code {
        429 => UpstreamError::RateLimited {
            provider,
            message,
            retry_after: parse_retry_after(headers, SystemTime::now()),
        },
        401 | 403 => UpstreamError::Auth {
            provider,
            status: code,
            message,
        },
        404 => UpstreamError::NotFound { provider, message },
        500..=599 => UpstreamError::Unavailable {
            provider,
            status: Some(code),
            message,
        },
        400..=499 => rejected(message),
        _ => UpstreamError::Protocol {
            provider,
            message: format!("unexpected HTTP status {code}"),
        },
    }
}

/// What a 4xx refusal is about when all we know is its HTTP status: 422 is the request's
/// content, 409 a conflict with another change, anything else the provider's state.
pub(crate) fn refusal_of_status(status: u16) -> Refusal {
    match status {
        422 => Refusal::Argument,
        409 => Refusal::Conflict,
        _ => Refusal::Precondition,
    }
}

/// A failed HTTP exchange (no usable response): connection, timeout, broken body.
pub(crate) fn transport_error(
    provider: &'static str,
    timeout: std::time::Duration,
    redactor: &Redactor,
    e: &reqwest::Error,
) -> UpstreamError {
    if e.is_builder() {
        return UpstreamError::Protocol {
            provider,
            message: format!("could not build the request: {}", innermost(e)),
        };
    }
    let what = if e.is_timeout() {
        format!("timed out after {timeout:?}")
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else if e.is_body() || e.is_decode() {
        "the connection broke while transferring a body".to_owned()
    } else {
        "the request failed".to_owned()
    };
    UpstreamError::Unavailable {
        provider,
        status: None,
        message: redactor.clean(&format!("{what}: {}", innermost(e))),
    }
}

/// A create's transport failure: one that never reached the provider (no connection, a
/// request that could not be built) did nothing; any other may have broken after the
/// request was sent, so whether the provider did the work is unknown.
pub(crate) fn create_transport_error(error: UpstreamError, e: &reqwest::Error) -> UpstreamError {
    if e.is_connect() || e.is_builder() {
        error
    } else {
        unconfirmed(error)
    }
}

/// A create's failure after it was sent (a broken exchange, an unreadable answer) as
/// [`UpstreamError::Unconfirmed`]; other failures are kept.
pub(crate) fn unconfirmed(error: UpstreamError) -> UpstreamError {
    match error {
        UpstreamError::Unavailable {
            provider,
            status: None,
            message,
        }
        | UpstreamError::Protocol { provider, message } => {
            UpstreamError::Unconfirmed { provider, message }
        }
        other => other,
    }
}

/// Sends one request and records it in the metrics: the 2xx response with its body
/// unread, or the failure classified with the adapter's own functions (a non-2xx body is
/// read for the provider's error envelope, and its headers give the retry hints).
pub(crate) async fn send_once(
    http: &reqwest::Client,
    request: reqwest::Request,
    retry: &RetryPolicy,
    provider: &'static str,
    transport: impl Fn(&reqwest::Error) -> UpstreamError,
    status_error: impl Fn(reqwest::StatusCode, &HeaderMap, &[u8]) -> UpstreamError,
) -> Result<reqwest::Response, Failure> {
    let method = request.method().clone();
    let path = request.url().path().to_owned();
    let started = tokio::time::Instant::now();
    let sent = http.execute(request).await;
    observe(retry, provider, started, &sent);
    let response = sent.map_err(|e| {
        let error = transport(&e);
        tracing::debug!(provider, %method, %path, %error, "upstream call failed");
        Failure::from(error)
    })?;
    let status = response.status();
    tracing::debug!(provider, %method, %path, status = status.as_u16(), "upstream call");
    if status.is_success() {
        return Ok(response);
    }
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|e| transport(&e))?;
    Err(failure_from_response(
        status_error(status, &headers, &body),
        &headers,
    ))
}

/// Installs ring as rustls' process-wide provider (reqwest is built without one); a
/// provider someone else installed first is kept.
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    });
}

/// `text/html, 1234 bytes`: what a body was, without any of its content.
pub(crate) fn describe_content(headers: &HeaderMap, len: usize) -> String {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/+.-_".contains(&b))
        })
        .unwrap_or("no content type");
    format!("{content_type}, {len} bytes")
}

/// A serde_json error without its text, which may quote the body.
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "unexpected shape",
        serde_json::error::Category::Eof => "truncated",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

/// The innermost cause of an error, which names what actually went wrong.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Counts one HTTP exchange with `provider` that started at `started`, for the metrics.
pub(crate) fn observe(
    retry: &RetryPolicy,
    provider: &str,
    started: Instant,
    sent: &Result<reqwest::Response, reqwest::Error>,
) {
    if let Some(metrics) = &retry.metrics {
        let status = sent.as_ref().ok().map(|r| r.status().as_u16());
        metrics.upstream_request(provider, status, started.elapsed());
    }
}

/// A failure with the retry hints of the response's headers.
pub(crate) fn failure_from_response(error: UpstreamError, headers: &HeaderMap) -> Failure {
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

    #[test]
    fn a_refusal_by_status_alone_is_a_precondition_but_for_422_and_409() {
        assert_eq!(refusal_of_status(422), Refusal::Argument);
        assert_eq!(refusal_of_status(409), Refusal::Conflict);
        for status in [400, 402, 405, 408, 413, 415] {
            assert_eq!(refusal_of_status(status), Refusal::Precondition, "{status}");
        }
    }

    #[tokio::test]
    async fn does_not_retry_a_refusal_or_a_should_retry_false() {
        let calls = AtomicU32::new(0);
        let refused = UpstreamError::Rejected {
            provider: "openai",
            status: 400,
            code: None,
            param: None,
            refusal: Refusal::Precondition,
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
                Err::<(), _>(failure_from_response(unavailable(), &headers))
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
            refusal: Refusal::Precondition,
            message: "try again".into(),
        };
        let result = fast()
            .run("test", None, || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(failure_from_response(refused.clone(), &headers)),
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
                    0 => Err(failure_from_response(unavailable(), &headers)),
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
                    0 => Err(failure_from_response(unavailable(), &headers)),
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
                Err::<(), _>(failure_from_response(unavailable(), &headers))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!error.to_string().contains("gave up"), "{error}");
    }
}
