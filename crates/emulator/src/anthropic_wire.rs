//! Anthropic's HTTP envelope, shared by the Messages handler and the front layer: the
//! error body, key auth, the `anthropic-ratelimit-*` and `request-id` headers. It names no
//! handler and no fault, so both sides depend on it and it on neither.

use std::time::{Duration, UNIX_EPOCH};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::app::App;

/// Emulated rate limits, reported in the `anthropic-ratelimit-*` headers.
const LIMIT_REQUESTS: u64 = 4000;
const LIMIT_INPUT_TOKENS: u64 = 2_000_000;
const LIMIT_OUTPUT_TOKENS: u64 = 400_000;

/// Whether `route` (`METHOD /path`) belongs to Anthropic's API rather than OpenAI's.
pub(crate) fn serves(route: &str) -> bool {
    route
        .split_once(' ')
        .is_some_and(|(_, path)| path == "/v1/messages" || path.starts_with("/v1/messages/"))
}

/// An error answered in Anthropic's envelope.
#[derive(Debug)]
pub(crate) struct AnthropicError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    headers: Vec<(&'static str, String)>,
}

impl AnthropicError {
    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        message: impl Into<String>,
    ) -> AnthropicError {
        AnthropicError {
            status,
            kind,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// A 400 `invalid_request_error`.
    pub(crate) fn invalid(message: impl Into<String>) -> AnthropicError {
        AnthropicError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub(crate) fn overloaded() -> AnthropicError {
        AnthropicError::new(overloaded_status(), "overloaded_error", "Overloaded")
    }

    /// The response, with `request_id` in the body as the API echoes it.
    pub(crate) fn into_response_with(self, request_id: Option<&str>) -> Response {
        let body = json!({
            "type": "error",
            "error": {"type": self.kind, "message": self.message},
            "request_id": request_id,
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        let headers = response.headers_mut();
        // The SDKs obey x-should-retry before their own status rules.
        let retryable = matches!(self.status.as_u16(), 408 | 409 | 429 | 500..);
        if retryable {
            headers.insert("x-should-retry", HeaderValue::from_static("true"));
        }
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        response
    }
}

fn overloaded_status() -> StatusCode {
    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// Key auth: `x-api-key`, or `Authorization: Bearer` (how the official Python SDK sends
/// API keys since its 2.x releases); both at once, or neither, is a 401, and so is a key
/// other than the configured one (any non-empty key is accepted when none is configured).
pub(crate) fn authenticate(app: &App, req: &Request) -> Result<(), AnthropicError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let api_key = header("x-api-key");
    let bearer = header("authorization").and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(str::trim)
    });
    let message = match (api_key, bearer) {
        (None, None) => "x-api-key header is required",
        (Some(_), Some(_)) => {
            "Provide either the x-api-key header or an Authorization header, not both"
        }
        (Some(key), None) | (None, Some(key)) => match &app.config.api_key {
            Some(expected) if expected != key => "invalid x-api-key",
            _ => return Ok(()),
        },
    };
    Err(AnthropicError::new(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        message,
    ))
}

/// The answer during an emulated outage: 529 overloaded, with `retry-after`.
pub(crate) fn outage(left: Duration, request_id: &str) -> Response {
    let mut e = AnthropicError::overloaded();
    e.headers
        .push(("retry-after", left.as_secs().max(1).to_string()));
    e.into_response_with(Some(request_id))
}

/// An injected 429: `retry-after` in whole seconds (at least 1), the limit exhausted.
pub(crate) fn rate_limited(app: &App, retry_after_ms: u64) -> AnthropicError {
    let secs = retry_after_ms.div_ceil(1000).max(1);
    let mut e = AnthropicError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        format!(
            "This request would exceed your organization's rate limit of {LIMIT_REQUESTS} requests per minute (org: {}, emulated). For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.",
            organization_id(app)
        ),
    );
    e.headers.push(("retry-after", secs.to_string()));
    e.headers
        .push(("anthropic-ratelimit-requests-remaining", "0".to_owned()));
    e.headers.push((
        "anthropic-ratelimit-requests-reset",
        rfc3339(app.clock.now() + secs as f64),
    ));
    e
}

/// Headers of every Messages response: `request-id`, the organization and the
/// `anthropic-ratelimit-*` family (those a handler or fault set are kept).
pub(crate) fn finish_headers(app: &App, request_id: &str, headers: &mut HeaderMap) {
    let now = app.clock.now();
    let minute = rfc3339(now + 60.0);
    let values = [
        ("request-id", request_id.to_owned()),
        ("anthropic-organization-id", organization_id(app)),
        (
            "anthropic-ratelimit-requests-limit",
            LIMIT_REQUESTS.to_string(),
        ),
        (
            "anthropic-ratelimit-requests-remaining",
            (LIMIT_REQUESTS - 1).to_string(),
        ),
        ("anthropic-ratelimit-requests-reset", rfc3339(now + 1.0)),
        (
            "anthropic-ratelimit-input-tokens-limit",
            LIMIT_INPUT_TOKENS.to_string(),
        ),
        (
            "anthropic-ratelimit-input-tokens-remaining",
            LIMIT_INPUT_TOKENS.to_string(),
        ),
        ("anthropic-ratelimit-input-tokens-reset", minute.clone()),
        (
            "anthropic-ratelimit-output-tokens-limit",
            LIMIT_OUTPUT_TOKENS.to_string(),
        ),
        (
            "anthropic-ratelimit-output-tokens-remaining",
            LIMIT_OUTPUT_TOKENS.to_string(),
        ),
        ("anthropic-ratelimit-output-tokens-reset", minute.clone()),
        (
            "anthropic-ratelimit-tokens-limit",
            (LIMIT_INPUT_TOKENS + LIMIT_OUTPUT_TOKENS).to_string(),
        ),
        (
            "anthropic-ratelimit-tokens-remaining",
            (LIMIT_INPUT_TOKENS + LIMIT_OUTPUT_TOKENS).to_string(),
        ),
        ("anthropic-ratelimit-tokens-reset", minute),
    ];
    for (name, value) in values {
        if !headers.contains_key(name) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }
}

/// A stable uuid for the emulated organization.
fn organization_id(app: &App) -> String {
    let h = hex::encode(Sha256::digest(app.config.org.as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// RFC 3339 UTC to the second of an emulated unix time, as the `*-reset` headers give it.
fn rfc3339(unix: f64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_of_anthropic() {
        assert!(serves("POST /v1/messages"));
        assert!(serves("POST /v1/messages/count_tokens"));
        assert!(!serves("POST /v1/chat/completions"));
        assert!(!serves("POST /v1/messagesx"));
    }
}
