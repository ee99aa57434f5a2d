//! The layer in front of every `/v1` route (request counting, outages, auth, injected
//! faults, the provider's response headers) and the `/_emulator` admin endpoints. It uses
//! the fault knobs ([`crate::faults`]) and the envelopes ([`crate::wire`],
//! [`crate::anthropic_wire`]); no handler uses it.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::anthropic_wire::{self, AnthropicError};
use crate::api::{ApiError, json};
use crate::app::App;
use crate::faults::{Fault, FaultRule};
use crate::net::ConnHandle;
use crate::wire::{self, ErrorEvent, RequestId, Truncate};

/// Marks a request already counted, so the fallback does not count it again.
#[derive(Clone, Copy)]
struct Counted;

/// The layer in front of every `/v1` route: counts, applies an outage, authenticates,
/// applies an injected fault, and adds the provider's response headers (OpenAI's, or
/// Anthropic's on `/v1/messages`).
pub(crate) async fn front(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_key(&req);
    app.faults.count(&route);
    if route == "GET /v1/fine_tuning/jobs/{id}" {
        if let Some(id) = req.uri().path().rsplit('/').next() {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            app.faults.note_job_read(id, at);
        }
    }
    req.extensions_mut().insert(Counted);
    let is_anthropic = anthropic_wire::serves(&route);
    let request_id = if is_anthropic {
        wire::anthropic_request_id()
    } else {
        wire::openai_request_id()
    };
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::debug_span!("emulator", route = %route, request_id = %request_id);
    let mut response = respond(&app, &route, req, next).instrument(span).await;
    if is_anthropic {
        anthropic_wire::finish_headers(&app, &request_id, response.headers_mut());
        return response;
    }
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("x-request-id", request_id);
    set(
        "openai-processing-ms",
        started.elapsed().as_millis().to_string(),
    );
    set("openai-version", "2020-10-01".to_owned());
    set("openai-organization", app.config.org.clone());
    response
}

async fn respond(app: &App, route: &str, mut req: Request, next: Next) -> Response {
    let anthropic_id = anthropic_wire::serves(route)
        .then(|| req.extensions().get::<RequestId>().map(|r| r.0.clone()))
        .flatten();
    if let Some(left) = app.faults.down_remaining() {
        tracing::debug!(route, "emulated outage");
        if let Some(id) = &anthropic_id {
            return anthropic_wire::outage(left, id);
        }
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is temporarily unable to handle your request (emulated outage). Please retry after a brief wait.",
        )
        .kind("server_error");
        e.headers
            .push(("retry-after", left.as_secs().max(1).to_string()));
        return e.into_response();
    }
    if let Some(id) = &anthropic_id {
        if let Err(e) = anthropic_wire::authenticate(app, &req) {
            return e.into_response_with(Some(id));
        }
    } else if let Err(e) = authenticate(app, &req) {
        return e.into_response();
    }
    let conn = req.extensions().get::<ConnectInfo<ConnHandle>>().cloned();
    let Some(fault) = app.faults.take(route) else {
        return next.run(req).await;
    };
    tracing::info!(route = %route, ?fault, "injecting a fault");
    // Error faults answer in the envelope of the API the route belongs to.
    let error = match &anthropic_id {
        Some(id) => anthropic_fault(app, &fault, id),
        None => openai_fault(app, &fault),
    };
    if let Some(response) = error {
        return response;
    }
    match fault {
        Fault::Latency { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(req).await
        }
        Fault::DropConnection => {
            if let Some(ConnectInfo(c)) = conn {
                c.kill();
            }
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Fault::LostResponse => {
            let response = next.run(req).await;
            // Read the whole body first so the work behind a streamed answer is done too.
            let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
            if let Some(ConnectInfo(c)) = conn {
                c.kill();
            }
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Fault::TruncateStream {
            after_chunks,
            abort,
        } => {
            req.extensions_mut().insert(Truncate {
                after_chunks,
                abort,
            });
            next.run(req).await
        }
        Fault::ErrorEvent { after_chunks } => {
            req.extensions_mut().insert(ErrorEvent { after_chunks });
            next.run(req).await
        }
        Fault::MalformedJson => {
            let response = next.run(req).await;
            let (mut parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let cut = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Response::from_parts(parts, Body::from(cut))
        }
        // Answered above, in the route's envelope.
        Fault::RateLimit { .. } | Fault::ServerError | Fault::Unavailable => {
            unreachable!("error faults are answered before the match")
        }
    }
}

/// OpenAI's answer to an error fault (429, 500, 503), or None for faults that shape a
/// normal answer instead.
fn openai_fault(app: &App, fault: &Fault) -> Option<Response> {
    let response = match *fault {
        Fault::RateLimit { retry_after_ms } => {
            let secs = retry_after_ms.div_ceil(1000).max(1);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Rate limit reached for requests in organization {} on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in {}s. Visit https://platform.openai.com/account/rate-limits to learn more.",
                    app.org_id, secs
                ),
            )
            .kind("requests")
            .code("rate_limit_exceeded");
            e.headers.push(("retry-after", secs.to_string()));
            e.headers
                .push(("retry-after-ms", retry_after_ms.to_string()));
            e.headers
                .push(("x-ratelimit-remaining-requests", "0".to_owned()));
            e.headers
                .push(("x-ratelimit-reset-requests", format!("{secs}s")));
            e.into_response()
        }
        Fault::ServerError => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request. Sorry about that!",
        )
        .kind("server_error")
        .into_response(),
        Fault::Unavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The engine is currently overloaded, please try again later.",
        )
        .kind("server_error")
        .into_response(),
        _ => return None,
    };
    Some(response)
}

/// `METHOD /v1/path/{template}`, or the raw path when no route matched.
fn route_key(req: &Request) -> String {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
    format!("{} {}", req.method(), path)
}

fn authenticate(app: &App, req: &Request) -> Result<(), ApiError> {
    let unauthorized = |message: String| ApiError::new(StatusCode::UNAUTHORIZED, message);
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let key = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .unwrap_or("");
    if key.is_empty() {
        return Err(unauthorized(
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.".to_owned(),
        ));
    }
    match &app.config.api_key {
        Some(expected) if expected != key => Err(unauthorized(format!(
            "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
            mask_key(key)
        ))
        .code("invalid_api_key")),
        _ => Ok(()),
    }
}

/// Masks a key as OpenAI does (`sk-te****...abcd`): never more than a third of it shows.
pub(crate) fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let n = chars.len();
    let (head, tail) = if n >= 24 { (8, 4) } else { (n / 4, 0) };
    let mut out: String = chars[..head].iter().collect();
    out.extend(std::iter::repeat_n('*', n - head - tail));
    out.extend(&chars[n - tail..]);
    out
}

/// Any path no route serves: OpenAI's "Invalid URL".
pub(crate) async fn unknown_route(State(app): State<App>, req: Request) -> Response {
    let counted = req.extensions().get::<Counted>().is_some();
    if req.uri().path().starts_with("/v1") && !counted {
        app.faults.count(&route_key(&req));
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Invalid URL ({} {})", req.method(), req.uri().path()),
    )
    .into_response()
}

/// Body of `POST /_emulator/faults`: one rule, or several plus an outage.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum FaultsRequest {
    One(FaultRule),
    Many(FaultsBatch),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultsBatch {
    #[serde(default)]
    rules: Vec<FaultRule>,
    #[serde(default)]
    upstream_down_ms: Option<u64>,
}

#[derive(Serialize)]
struct FaultsState {
    rules: Vec<FaultRule>,
    upstream_down_remaining_ms: Option<u64>,
}

fn faults_state(app: &App) -> Response {
    json(&FaultsState {
        rules: app.faults.pending(),
        upstream_down_remaining_ms: app.faults.down_remaining().map(|d| d.as_millis() as u64),
    })
}

pub(crate) async fn admin_get(State(app): State<App>) -> Response {
    faults_state(&app)
}

pub(crate) async fn admin_post(State(app): State<App>, body: Bytes) -> Response {
    let request: FaultsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::invalid(format!(
                "invalid fault request: {e}; expected {{\"route\", \"times\", \"kind\", ...}} or {{\"rules\": [...], \"upstream_down_ms\": N}}"
            ))
            .into_response();
        }
    };
    match request {
        FaultsRequest::One(rule) => app.faults.add(rule),
        FaultsRequest::Many(batch) => {
            for rule in batch.rules {
                app.faults.add(rule);
            }
            if let Some(ms) = batch.upstream_down_ms {
                app.faults.upstream_down(Duration::from_millis(ms));
            }
        }
    }
    faults_state(&app)
}

pub(crate) async fn admin_delete(State(app): State<App>) -> Response {
    app.faults.clear();
    faults_state(&app)
}

pub(crate) async fn admin_stats(State(app): State<App>) -> Response {
    json(&app.faults.stats())
}

pub(crate) async fn admin_reset_stats(State(app): State<App>) -> Response {
    app.faults.reset_stats();
    json(&app.faults.stats())
}

/// Anthropic's answer to an error fault (429, 500, 529), or None for faults that shape a normal
/// answer instead.
fn anthropic_fault(app: &App, fault: &Fault, request_id: &str) -> Option<Response> {
    let error = match fault {
        Fault::RateLimit { retry_after_ms } => anthropic_wire::rate_limited(app, *retry_after_ms),
        Fault::ServerError => AnthropicError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "Internal server error",
        ),
        Fault::Unavailable => AnthropicError::overloaded(),
        _ => return None,
    };
    Some(error.into_response_with(Some(request_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keys_without_revealing_them() {
        let long = "sk-test-0123456789abcdefghijklmnop";
        let m = mask_key(long);
        assert!(m.starts_with("sk-test-"), "{m}");
        assert!(m.ends_with("mnop"), "{m}");
        assert_eq!(m.chars().count(), long.chars().count());
        assert!(!m.contains("0123456789"));
        assert_eq!(mask_key("sk-short"), "sk******");
        assert_eq!(mask_key(""), "");
    }

    #[test]
    fn fault_json_shapes() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"route":"POST /v1/fine_tuning/jobs","times":2,"kind":"rate_limit","retry_after_ms":1500}"#,
        )
        .unwrap();
        assert_eq!(
            rule.fault,
            Fault::RateLimit {
                retry_after_ms: 1500
            }
        );
        assert_eq!(rule.times, 2);
        let rule: FaultRule = serde_json::from_str(r#"{"kind":"lost_response"}"#).unwrap();
        assert_eq!((rule.route.as_str(), rule.times), ("*", 1));
        let batch: FaultsRequest = serde_json::from_str(r#"{"upstream_down_ms": 500}"#).unwrap();
        assert!(matches!(batch, FaultsRequest::Many(b) if b.upstream_down_ms == Some(500)));
    }
}
