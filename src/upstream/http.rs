//! Plumbing both provider adapters share: the TLS provider, and describing failures
//! without leaking keys or response bodies.

use std::sync::Once;

use regex::Regex;
use reqwest::header::{CONTENT_TYPE, HeaderMap};

/// Provider messages are cut to this many characters: enough for any real one.
pub(super) const MAX_MESSAGE_CHARS: usize = 1000;

/// Removes secrets from provider text: our key verbatim, and anything matching the
/// provider's key shapes (and masked echoes of keys).
pub(super) struct Redactor {
    key: String,
    patterns: Regex,
}

impl Redactor {
    /// `patterns` is a regex of key shapes to remove besides the key itself.
    pub(super) fn new(key: &str, patterns: &str) -> Redactor {
        Redactor {
            key: key.to_owned(),
            patterns: Regex::new(patterns).expect("a valid regex"),
        }
    }

    pub(super) fn clean(&self, text: &str) -> String {
        let text = if self.key.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.key, "<redacted>")
        };
        let text = self.patterns.replace_all(&text, "<redacted>");
        truncate(&text, MAX_MESSAGE_CHARS)
    }
}

/// A failed HTTP exchange (no usable response): connection, timeout, broken body.
pub(super) fn transport_error(
    provider: &'static str,
    timeout: std::time::Duration,
    redactor: &Redactor,
    e: &reqwest::Error,
) -> super::UpstreamError {
    if e.is_builder() {
        return super::UpstreamError::Protocol {
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
    super::UpstreamError::Unavailable {
        provider,
        status: None,
        message: redactor.clean(&format!("{what}: {}", innermost(e))),
    }
}

/// A create's transport failure: one that never reached the provider (no connection, a
/// request that could not be built) did nothing; any other may have broken after the
/// request was sent, so whether the provider did the work is unknown.
pub(super) fn create_transport_error(
    error: super::UpstreamError,
    e: &reqwest::Error,
) -> super::UpstreamError {
    if e.is_connect() || e.is_builder() {
        error
    } else {
        unconfirmed(error)
    }
}

/// A create's failure after it was sent (a broken exchange, an unreadable answer) as
/// [`super::UpstreamError::Unconfirmed`]; other failures are kept.
pub(super) fn unconfirmed(error: super::UpstreamError) -> super::UpstreamError {
    match error {
        super::UpstreamError::Unavailable {
            provider,
            status: None,
            message,
        }
        | super::UpstreamError::Protocol { provider, message } => {
            super::UpstreamError::Unconfirmed { provider, message }
        }
        other => other,
    }
}

/// Sends one request and records it in the metrics: the 2xx response with its body
/// unread, or the failure classified with the adapter's own functions (a non-2xx body is
/// read for the provider's error envelope, and its headers give the retry hints).
pub(super) async fn send_once(
    http: &reqwest::Client,
    request: reqwest::Request,
    retry: &super::RetryPolicy,
    provider: &'static str,
    transport: impl Fn(&reqwest::Error) -> super::UpstreamError,
    status_error: impl Fn(reqwest::StatusCode, &HeaderMap, &[u8]) -> super::UpstreamError,
) -> Result<reqwest::Response, super::retry::Failure> {
    use super::retry::Failure;
    let method = request.method().clone();
    let path = request.url().path().to_owned();
    let started = tokio::time::Instant::now();
    let sent = http.execute(request).await;
    retry.observe(provider, started, &sent);
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
    Err(Failure::from_response(
        status_error(status, &headers, &body),
        &headers,
    ))
}

/// Installs ring as rustls' process-wide provider (reqwest is built without one); a
/// provider someone else installed first is kept.
pub(super) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    });
}

/// `text/html, 1234 bytes`: what a body was, without any of its content.
pub(super) fn describe_content(headers: &HeaderMap, len: usize) -> String {
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
pub(super) fn describe_json_error(e: &serde_json::Error) -> String {
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

pub(super) fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}
