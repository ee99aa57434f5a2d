//! Anthropic's Messages API (`POST /v1/messages`), plain and streamed, with prompt
//! caching. Answers are deterministic text naming the model and echoing the last user
//! message. Shapes follow `reference/anthropic-api.md` and the recorded traffic
//! beside it: the `Message` object of `recorded/py_nonstream_200_sonnet-4-5.json`, the
//! event sequence and framing of `sse/recorded_sonnet-4-5_stream_body.sse`, and the error
//! envelope `{"type":"error","error":{"type","message"},"request_id"}`.
//!
//! Token counts are an approximation: Claude's tokenizer is not public, so text is counted
//! with o200k_base (the real counts differ, by about 30% more on Sonnet 5's tokenizer).
//! Error messages quoted by the reference are used verbatim; the others are written in
//! the API's style (`field: problem`) and are not known to match it word for word.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::App;
use super::api::random_id;
use super::faults::{Fault, Truncate};
use crate::dataset::{Counter, Encoding};

/// The route this module serves, as fault rules and stats name it.
pub(crate) const ROUTE: &str = "POST /v1/messages";

/// Longest echo of the user's message in an answer, in characters.
const ECHO_CHARS: usize = 400;
/// Largest request body (the 32 MB Messages limit is unconfirmed; see the reference).
const BODY_LIMIT: usize = 32 << 20;
/// At most this many `cache_control` breakpoints per request.
const MAX_BREAKPOINTS: usize = 4;
/// The accepted `anthropic-version` values. `2026-10-21` is what the official Python SDK
/// sends from its 2.x releases; what it changes on the wire is not in the stored
/// references, so it is answered like `2023-06-01`.
const VERSIONS: &[&str] = &["2023-06-01", "2023-01-01", "2026-10-21"];
/// Emulated rate limits, reported in the `anthropic-ratelimit-*` headers.
const LIMIT_REQUESTS: u64 = 4000;
const LIMIT_INPUT_TOKENS: u64 = 2_000_000;
const LIMIT_OUTPUT_TOKENS: u64 = 400_000;

/// Top-level request fields the API defines (others are "Extra inputs are not permitted").
const REQUEST_KEYS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
    "cache_control",
    "thinking",
    "output_config",
    "service_tier",
    "inference_geo",
    "container",
    "context_management",
    "mcp_servers",
    "user_profile_id",
];

/// A Claude model the emulator answers as.
struct ModelSpec {
    /// The id responses carry (the dated id for an alias that has one).
    id: &'static str,
    /// Other names accepted in requests.
    aliases: &'static [&'static str],
    max_output_tokens: i64,
    /// Shortest prefix that caches, in tokens.
    min_cacheable: u64,
    /// Whether non-default `temperature`/`top_p`/`top_k` are accepted (Sonnet 5+: no).
    sampling: bool,
    /// Whether a final assistant turn (prefill) is accepted (Sonnet 5.5: no).
    prefill: bool,
}

/// The Sonnet models of the Pro tier. The cache minimum is 1024 for all of them: the
/// reference gives 1024 for Sonnet 5, 4.6 and 4.5; 512 for Sonnet 5.5 is unconfirmed.
const MODELS: &[ModelSpec] = &[
    ModelSpec {
        id: "claude-sonnet-5-5",
        aliases: &[],
        max_output_tokens: 128_000,
        min_cacheable: 1024,
        sampling: false,
        prefill: false,
    },
    ModelSpec {
        id: "claude-sonnet-5",
        aliases: &[],
        max_output_tokens: 128_000,
        min_cacheable: 1024,
        sampling: false,
        prefill: true,
    },
    ModelSpec {
        id: "claude-sonnet-4-6",
        aliases: &[],
        max_output_tokens: 64_000,
        min_cacheable: 1024,
        sampling: true,
        prefill: true,
    },
    ModelSpec {
        id: "claude-sonnet-4-5-20250929",
        aliases: &["claude-sonnet-4-5"],
        max_output_tokens: 64_000,
        min_cacheable: 1024,
        sampling: true,
        prefill: true,
    },
];

fn find_model(name: &str) -> Option<&'static ModelSpec> {
    MODELS
        .iter()
        .find(|m| m.id == name || m.aliases.contains(&name))
}

// ---- Errors, auth, faults and headers (used by the front layer) -------------------

/// The request id of a request, set by the front layer (`request-id`, `request_id`).
#[derive(Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// Tells the handler to end its stream with an `event: error` (overloaded) after
/// `after_chunks` events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorEvent {
    pub(crate) after_chunks: u32,
}

/// Whether `route` (`METHOD /path`) belongs to Anthropic's API rather than OpenAI's.
pub(crate) fn serves(route: &str) -> bool {
    route
        .split_once(' ')
        .is_some_and(|(_, path)| path == "/v1/messages" || path.starts_with("/v1/messages/"))
}

/// A request id as Anthropic forms them (`req_011C` and 20 letters and digits).
pub(crate) fn new_request_id() -> String {
    format!("req_011C{}", random_id(20))
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
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> AnthropicError {
        AnthropicError {
            status,
            kind,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// A 400 `invalid_request_error`.
    fn invalid(message: impl Into<String>) -> AnthropicError {
        AnthropicError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn overloaded() -> AnthropicError {
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

/// The answer to an error fault (429, 500, 529), or None for faults that shape a normal
/// answer instead.
pub(crate) fn fault_response(app: &App, fault: &Fault, request_id: &str) -> Option<Response> {
    let error = match fault {
        Fault::RateLimit { retry_after_ms } => rate_limited(app, *retry_after_ms),
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

/// An injected 429: `retry-after` in whole seconds (at least 1), the limit exhausted.
fn rate_limited(app: &App, retry_after_ms: u64) -> AnthropicError {
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

// ---- Prompt cache -----------------------------------------------------------------

/// Cached prefixes by content hash (model included), with their emulated expiry.
#[derive(Default)]
pub(crate) struct PromptCache {
    entries: HashMap<[u8; 32], Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    expires: f64,
    ttl: f64,
}

/// A `cache_control` breakpoint: the prefix up to and including its block.
struct Breakpoint {
    prefix_tokens: u64,
    digest: [u8; 32],
    ttl_secs: f64,
}

/// What caching did for one request, in tokens.
#[derive(Default, Clone, Copy)]
struct CacheOutcome {
    read: u64,
    write_5m: u64,
    write_1h: u64,
}

impl PromptCache {
    /// Reads the longest live cached prefix, then writes every longer breakpoint. A read
    /// restarts its entry's lifetime; entries live from the start of the request.
    fn apply(&mut self, breakpoints: &[Breakpoint], now: f64) -> CacheOutcome {
        self.entries.retain(|_, e| e.expires > now);
        let mut outcome = CacheOutcome::default();
        let hit = breakpoints
            .iter()
            .rposition(|b| self.entries.contains_key(&b.digest));
        if let Some(i) = hit {
            let b = &breakpoints[i];
            if let Some(e) = self.entries.get_mut(&b.digest) {
                e.expires = now + e.ttl;
            }
            outcome.read = b.prefix_tokens;
        }
        let mut covered = outcome.read;
        let first_new = hit.map_or(0, |i| i + 1);
        for b in &breakpoints[first_new..] {
            let tokens = b.prefix_tokens.saturating_sub(covered);
            covered = covered.max(b.prefix_tokens);
            if b.ttl_secs > 300.0 {
                outcome.write_1h += tokens;
            } else {
                outcome.write_5m += tokens;
            }
            self.entries.insert(
                b.digest,
                Entry {
                    expires: now + b.ttl_secs,
                    ttl: b.ttl_secs,
                },
            );
        }
        outcome
    }
}

// ---- The request --------------------------------------------------------------------

/// A piece of the prompt in render order (tools, system, messages): what it adds to the
/// cache key, its tokens, and the TTL of its `cache_control` when it has one.
struct Unit {
    key: Vec<u8>,
    text: String,
    breakpoint: Option<f64>,
}

/// A validated request.
struct MessagesRequest {
    model: &'static ModelSpec,
    max_tokens: u64,
    stream: bool,
    stop_sequences: Vec<String>,
    units: Vec<Unit>,
    last_user_text: String,
}

/// `POST /v1/messages`.
pub(crate) async fn messages(State(app): State<App>, req: Request) -> Response {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(new_request_id);
    match handle(&app, req).await {
        Ok(response) => response,
        Err(e) => e.into_response_with(Some(&request_id)),
    }
}

async fn handle(app: &App, req: Request) -> Result<Response, AnthropicError> {
    let truncate = req.extensions().get::<Truncate>().copied();
    let error_event = req.extensions().get::<ErrorEvent>().copied();
    match req
        .headers()
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
    {
        None => {
            return Err(AnthropicError::invalid(
                "anthropic-version: header is required",
            ));
        }
        Some(v) if !VERSIONS.contains(&v.trim()) => {
            return Err(AnthropicError::invalid(format!(
                "anthropic-version: invalid version {:?}",
                v.chars().take(40).collect::<String>()
            )));
        }
        Some(_) => {}
    }
    let body = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|_| {
            AnthropicError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
            )
        })?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| AnthropicError::invalid("The request body is not valid JSON."))?;
    app.record(ROUTE, value.clone());
    let request = parse_request(value)?;
    // Cache lifetimes run from the start of the request.
    let now = app.clock.now();
    if !request.stream && error_event.is_some() {
        // The non-streaming twin of an in-stream overload.
        return Err(AnthropicError::overloaded());
    }

    // Tokenizing an 18K-token system prompt is CPU work: keep it off the async workers.
    let (request, counted) = tokio::task::spawn_blocking(move || {
        let counted = count(&request);
        (request, counted)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "messages task failed");
        AnthropicError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "Internal server error",
        )
    })?;
    let cache = {
        let mut store = app.store.lock().unwrap_or_else(|e| e.into_inner());
        store.prompt_cache.apply(&counted.breakpoints, now)
    };
    let written = cache.write_5m + cache.write_1h;
    let usage = Usage {
        input_tokens: counted.prompt_tokens.saturating_sub(cache.read + written),
        cache_creation_input_tokens: written,
        cache_read_input_tokens: cache.read,
        cache_creation: CacheCreation {
            ephemeral_5m_input_tokens: cache.write_5m,
            ephemeral_1h_input_tokens: cache.write_1h,
        },
        output_tokens: counted.answer.pieces.len() as u64,
        service_tier: "standard",
        inference_geo: "not_available",
    };
    let id = format!("msg_01{}", random_id(22));
    let model = request.model.id;
    let answer = counted.answer;
    if request.stream {
        let stream_fault = match (truncate, error_event) {
            (_, Some(e)) => StreamEnd::ErrorEvent(e.after_chunks),
            (Some(t), None) => StreamEnd::Truncate(t),
            (None, None) => StreamEnd::Complete,
        };
        return Ok(stream_response(
            app,
            &id,
            model,
            usage,
            &answer,
            stream_fault,
        ));
    }
    #[derive(Serialize)]
    struct TextBlock {
        #[serde(rename = "type")]
        kind: &'static str,
        text: String,
    }
    #[derive(Serialize)]
    struct Message<'a> {
        model: &'a str,
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        role: &'static str,
        content: Vec<TextBlock>,
        stop_reason: &'static str,
        stop_sequence: Option<String>,
        usage: Usage,
    }
    let text = answer.pieces.concat();
    let message = Message {
        model,
        id: &id,
        kind: "message",
        role: "assistant",
        content: if text.is_empty() {
            Vec::new()
        } else {
            vec![TextBlock { kind: "text", text }]
        },
        stop_reason: answer.stop_reason,
        stop_sequence: answer.stop_sequence,
        usage,
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&message).unwrap_or_default(),
    )
        .into_response())
}

fn parse_request(value: Value) -> Result<MessagesRequest, AnthropicError> {
    let Value::Object(map) = value else {
        return Err(AnthropicError::invalid(
            "The request body must be a JSON object.",
        ));
    };
    if let Some(k) = map.keys().find(|k| !REQUEST_KEYS.contains(&k.as_str())) {
        return Err(AnthropicError::invalid(format!(
            "{k}: Extra inputs are not permitted"
        )));
    }
    let model_name = match map.get("model") {
        None => return Err(AnthropicError::invalid("model: Field required")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(AnthropicError::invalid(
                "model: Input should be a valid string",
            ));
        }
    };
    let max_tokens = match map.get("max_tokens") {
        None => return Err(AnthropicError::invalid("max_tokens: Field required")),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            AnthropicError::invalid("max_tokens: Input should be a valid integer")
        })?,
        Some(_) => {
            return Err(AnthropicError::invalid(
                "max_tokens: Input should be a valid integer",
            ));
        }
    };
    // 0 is allowed: it pre-warms the prompt cache and generates nothing.
    if max_tokens < 0 {
        return Err(AnthropicError::invalid(
            "max_tokens: Input should be greater than or equal to 0",
        ));
    }
    let messages = match map.get("messages") {
        None => return Err(AnthropicError::invalid("messages: Field required")),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(AnthropicError::invalid(
                "messages: Input should be a valid list",
            ));
        }
    };
    let stream = match map.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(AnthropicError::invalid(
                "stream: Input should be a valid boolean",
            ));
        }
    };
    let stop_sequences = match map.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                AnthropicError::invalid("stop_sequences: Input should be a list of strings")
            })?,
        Some(_) => {
            return Err(AnthropicError::invalid(
                "stop_sequences: Input should be a valid list",
            ));
        }
    };
    match map.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            if let Some(k) = m.keys().find(|k| k.as_str() != "user_id") {
                return Err(AnthropicError::invalid(format!(
                    "metadata.{k}: Extra inputs are not permitted"
                )));
            }
            if !matches!(
                m.get("user_id"),
                None | Some(Value::Null | Value::String(_))
            ) {
                return Err(AnthropicError::invalid(
                    "metadata.user_id: Input should be a valid string",
                ));
            }
        }
        Some(_) => {
            return Err(AnthropicError::invalid(
                "metadata: Input should be a valid dictionary",
            ));
        }
    }
    if stream && max_tokens == 0 {
        return Err(AnthropicError::invalid(
            "max_tokens: 0 cannot be combined with stream: true",
        ));
    }
    let sampling = check_sampling(&map)?;

    // The model is checked after the body's shape, as the API reports a bad body first.
    let Some(model) = find_model(model_name) else {
        return Err(AnthropicError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("model: {model_name}"),
        ));
    };
    if max_tokens > model.max_output_tokens {
        return Err(AnthropicError::invalid(format!(
            "max_tokens: {max_tokens} > {}, which is the maximum allowed number of output tokens for {}",
            model.max_output_tokens, model.id
        )));
    }
    if !model.sampling {
        if let Some(name) = sampling.non_default.first() {
            return Err(AnthropicError::invalid(format!(
                "{name} is deprecated for this model"
            )));
        }
    } else if sampling.temperature && sampling.top_p {
        return Err(AnthropicError::invalid(
            "temperature and top_p cannot both be specified for this model. Please use only one.",
        ));
    }

    let mut units = Vec::new();
    if let Some(tools) = map.get("tools") {
        let Value::Array(tools) = tools else {
            return Err(AnthropicError::invalid(
                "tools: Input should be a valid list",
            ));
        };
        for (i, tool) in tools.iter().enumerate() {
            units.push(value_unit(tool, b"tool", &format!("tools.{i}"))?);
        }
    }
    match map.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => units.push(Unit {
            key: keyed(b"system", s.as_bytes()),
            text: s.clone(),
            breakpoint: None,
        }),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                let text = block
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|_| block.get("type").and_then(Value::as_str) == Some("text"))
                    .ok_or_else(|| {
                        AnthropicError::invalid(format!(
                            "system.{i}: Input should be a text block {{\"type\": \"text\", \"text\": ...}}"
                        ))
                    })?;
                units.push(Unit {
                    key: keyed(b"system", text.as_bytes()),
                    text: text.to_owned(),
                    breakpoint: cache_ttl(block, &format!("system.{i}"))?,
                });
            }
        }
        Some(_) => {
            return Err(AnthropicError::invalid(
                "system: Input should be a valid string or a list of text blocks",
            ));
        }
    }
    let (message_units, last_user_text) = parse_messages(messages, model)?;
    units.extend(message_units);
    // Top-level ("automatic") caching puts the breakpoint on the last block.
    if let Some(cc) = map.get("cache_control") {
        let ttl = cache_ttl(&json!({ "cache_control": cc }), "")?;
        if let (Some(ttl), Some(last)) = (ttl, units.last_mut()) {
            last.breakpoint = Some(ttl);
        }
    }
    let breakpoints = units.iter().filter(|u| u.breakpoint.is_some()).count();
    if breakpoints > MAX_BREAKPOINTS {
        return Err(AnthropicError::invalid(format!(
            "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {breakpoints}."
        )));
    }
    Ok(MessagesRequest {
        model,
        max_tokens: max_tokens as u64,
        stream,
        stop_sequences,
        units,
        last_user_text,
    })
}

/// Which sampling parameters a request sets, and which of them to non-default values.
struct Sampling {
    temperature: bool,
    top_p: bool,
    non_default: Vec<&'static str>,
}

fn check_sampling(map: &Map<String, Value>) -> Result<Sampling, AnthropicError> {
    let mut sampling = Sampling {
        temperature: false,
        top_p: false,
        non_default: Vec::new(),
    };
    for (name, max, default) in [
        ("temperature", Some(1.0), 1.0),
        ("top_p", Some(1.0), 1.0),
        ("top_k", None, -1.0),
    ] {
        let v = match map.get(name) {
            None | Some(Value::Null) => continue,
            Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(_) => {
                return Err(AnthropicError::invalid(format!(
                    "{name}: Input should be a valid number"
                )));
            }
        };
        if v < 0.0 {
            return Err(AnthropicError::invalid(format!(
                "{name}: Input should be greater than or equal to 0"
            )));
        }
        if let Some(max) = max.filter(|m| v > *m) {
            return Err(AnthropicError::invalid(format!(
                "{name}: Input should be less than or equal to {max}"
            )));
        }
        match name {
            "temperature" => sampling.temperature = true,
            "top_p" => sampling.top_p = true,
            _ => {}
        }
        if v != default {
            sampling.non_default.push(name);
        }
    }
    Ok(sampling)
}

/// The turns as units, and the text of the last user turn. Consecutive turns of one
/// role are accepted (the API merges them; the reference notes the conflicting claim).
fn parse_messages(
    messages: &[Value],
    model: &ModelSpec,
) -> Result<(Vec<Unit>, String), AnthropicError> {
    if messages.is_empty() {
        return Err(AnthropicError::invalid(
            "messages: at least one message is required",
        ));
    }
    let mut units = Vec::new();
    let mut last_user_text = String::new();
    let last = messages.len() - 1;
    let mut final_role = "user";
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(AnthropicError::invalid(format!(
                "messages.{i}: Input should be a valid dictionary"
            )));
        };
        let role = match m.get("role").and_then(Value::as_str) {
            Some(r @ ("user" | "assistant")) => r,
            None if !m.contains_key("role") => {
                return Err(AnthropicError::invalid(format!(
                    "messages.{i}.role: Field required"
                )));
            }
            _ => {
                return Err(AnthropicError::invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )));
            }
        };
        if i == 0 && role != "user" {
            return Err(AnthropicError::invalid(
                "messages: first message must use the \"user\" role",
            ));
        }
        final_role = role;
        let role_key = role.as_bytes();
        let mut texts = Vec::new();
        match m.get("content") {
            None => {
                return Err(AnthropicError::invalid(format!(
                    "messages.{i}.content: Field required"
                )));
            }
            Some(Value::String(s)) => {
                if s.is_empty() && !(i == last && role == "assistant") {
                    return Err(non_empty(i));
                }
                texts.push(s.clone());
                units.push(Unit {
                    key: keyed(role_key, s.as_bytes()),
                    text: s.clone(),
                    breakpoint: None,
                });
            }
            Some(Value::Array(blocks)) => {
                if blocks.is_empty() && !(i == last && role == "assistant") {
                    return Err(non_empty(i));
                }
                for (j, block) in blocks.iter().enumerate() {
                    let path = format!("messages.{i}.content.{j}");
                    let kind = block.get("type").and_then(Value::as_str).ok_or_else(|| {
                        AnthropicError::invalid(format!("{path}.type: Field required"))
                    })?;
                    if kind == "text" {
                        let text = block.get("text").and_then(Value::as_str).ok_or_else(|| {
                            AnthropicError::invalid(format!(
                                "{path}.text: Input should be a valid string"
                            ))
                        })?;
                        if text.is_empty() {
                            return Err(AnthropicError::invalid(
                                "messages: text content blocks must be non-empty",
                            ));
                        }
                        texts.push(text.to_owned());
                        units.push(Unit {
                            key: keyed(role_key, text.as_bytes()),
                            text: text.to_owned(),
                            breakpoint: cache_ttl(block, &path)?,
                        });
                    } else {
                        units.push(value_unit(block, role_key, &path)?);
                    }
                }
            }
            Some(_) => {
                return Err(AnthropicError::invalid(format!(
                    "messages.{i}.content: Input should be a valid string or a list of content blocks"
                )));
            }
        }
        if role == "user" {
            last_user_text = texts.join(" ");
        }
    }
    if final_role == "assistant" && !model.prefill {
        return Err(AnthropicError::invalid(
            "This model does not support assistant message prefill. The conversation must end with a user message.",
        ));
    }
    Ok((units, last_user_text))
}

fn non_empty(i: usize) -> AnthropicError {
    AnthropicError::invalid(format!(
        "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
    ))
}

/// A non-text block (tool, image, tool result...) as a unit: its JSON, without its
/// `cache_control`, is what it adds to the prompt.
fn value_unit(value: &Value, role: &[u8], path: &str) -> Result<Unit, AnthropicError> {
    let Value::Object(map) = value else {
        return Err(AnthropicError::invalid(format!(
            "{path}: Input should be a valid dictionary"
        )));
    };
    let breakpoint = cache_ttl(value, path)?;
    let mut map = map.clone();
    map.remove("cache_control");
    let text = Value::Object(map).to_string();
    Ok(Unit {
        key: keyed(role, text.as_bytes()),
        text,
        breakpoint,
    })
}

/// The cache key bytes of a unit: where it sits, then its content, length-prefixed so
/// no two different prompts render alike.
fn keyed(role: &[u8], content: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(role.len() + content.len() + 10);
    key.extend_from_slice(role);
    key.push(0);
    key.extend_from_slice(&(content.len() as u64).to_le_bytes());
    key.extend_from_slice(content);
    key
}

/// The TTL in seconds of a block's `cache_control`, if it has one.
fn cache_ttl(block: &Value, path: &str) -> Result<Option<f64>, AnthropicError> {
    let cc = match block.get("cache_control") {
        None | Some(Value::Null) => return Ok(None),
        Some(cc) => cc,
    };
    let at = if path.is_empty() {
        "cache_control".to_owned()
    } else {
        format!("{path}.cache_control")
    };
    if cc.get("type").and_then(Value::as_str) != Some("ephemeral") {
        return Err(AnthropicError::invalid(format!(
            "{at}.type: Input should be 'ephemeral'"
        )));
    }
    match cc.get("ttl") {
        None | Some(Value::Null) => Ok(Some(300.0)),
        Some(Value::String(t)) if t == "5m" => Ok(Some(300.0)),
        Some(Value::String(t)) if t == "1h" => Ok(Some(3600.0)),
        Some(_) => Err(AnthropicError::invalid(format!(
            "{at}.ttl: Input should be '5m' or '1h'"
        ))),
    }
}

// ---- Counting and answering ---------------------------------------------------------

/// The prompt's tokens, its cache breakpoints and the answer.
struct Counted {
    prompt_tokens: u64,
    breakpoints: Vec<Breakpoint>,
    answer: Answer,
}

struct Answer {
    /// One piece per output token (whole characters).
    pieces: Vec<String>,
    stop_reason: &'static str,
    stop_sequence: Option<String>,
}

/// Counts the prompt unit by unit (o200k_base as a stand-in for Claude's tokenizer) and
/// hashes its prefixes; only breakpoints whose prefix reaches the model's minimum cache.
fn count(request: &MessagesRequest) -> Counted {
    let mut counter = Counter::new(Encoding::O200kBase);
    let mut hasher = Sha256::new();
    // Caches are model-scoped.
    hasher.update(request.model.id.as_bytes());
    hasher.update([0]);
    let mut total = 0;
    let mut breakpoints = Vec::new();
    for unit in &request.units {
        total += counter.count(&unit.text);
        hasher.update(&unit.key);
        if let Some(ttl_secs) = unit.breakpoint {
            if total >= request.model.min_cacheable {
                breakpoints.push(Breakpoint {
                    prefix_tokens: total,
                    digest: hasher.clone().finalize().into(),
                    ttl_secs,
                });
            }
        }
    }
    Counted {
        prompt_tokens: total,
        breakpoints,
        answer: answer(request),
    }
}

/// The answer's pieces after `stop_sequences` and `max_tokens`, and why it ended.
fn answer(request: &MessagesRequest) -> Answer {
    let model = request.model.id;
    let echo: String = request.last_user_text.chars().take(ECHO_CHARS).collect();
    let mut text = if echo.trim().is_empty() {
        format!("This is {model}, emulated by FineTune: no model ran, and there was no user text.")
    } else {
        format!("This is {model}, emulated by FineTune: no model ran. You said: {echo}")
    };
    let mut stop_reason = "end_turn";
    let mut stop_sequence = None;
    let first_stop = request
        .stop_sequences
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
        .min_by_key(|(at, _)| *at);
    if let Some((at, s)) = first_stop {
        text.truncate(at);
        stop_reason = "stop_sequence";
        stop_sequence = Some(s.clone());
    }
    let bpe = Encoding::O200kBase.bpe();
    let mut tokens = bpe.encode_ordinary(&text);
    if tokens.len() as u64 > request.max_tokens {
        tokens.truncate(request.max_tokens as usize);
        stop_reason = "max_tokens";
        stop_sequence = None;
    }
    // Join byte pieces until they are whole UTF-8, so no character is split.
    let mut pieces = Vec::with_capacity(tokens.len());
    let mut pending: Vec<u8> = Vec::new();
    for t in tokens {
        if let Ok(bytes) = bpe.decode_bytes(&[t]) {
            pending.extend_from_slice(&bytes);
        }
        if let Ok(s) = std::str::from_utf8(&pending) {
            pieces.push(s.to_owned());
            pending.clear();
        }
    }
    if !pending.is_empty() {
        pieces.push(String::from_utf8_lossy(&pending).into_owned());
    }
    Answer {
        pieces,
        stop_reason,
        stop_sequence,
    }
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation: CacheCreation,
    output_tokens: u64,
    service_tier: &'static str,
    inference_geo: &'static str,
}

#[derive(Serialize, Clone, Copy)]
struct CacheCreation {
    ephemeral_5m_input_tokens: u64,
    ephemeral_1h_input_tokens: u64,
}

// ---- Streaming ----------------------------------------------------------------------

/// How a stream ends: normally, cut before `message_stop` (cleanly or by breaking the
/// connection), or with an in-stream overload error after some events.
#[derive(Clone, Copy)]
enum StreamEnd {
    Complete,
    Truncate(Truncate),
    ErrorEvent(u32),
}

/// One SSE event as the API frames it: a run of spaces before the data's last `}`, as in
/// recorded traffic (parsers must tolerate it, so the emulator sends it).
fn sse(name: &str, data: &Value, index: usize) -> String {
    let json = data.to_string();
    let pad = " ".repeat((index * 7 + 3) % 16);
    let body = match json.strip_suffix('}') {
        Some(head) => format!("{head}{pad}}}"),
        None => json,
    };
    format!("event: {name}\ndata: {body}\n\n")
}

fn stream_response(
    app: &App,
    id: &str,
    model: &str,
    usage: Usage,
    answer: &Answer,
    end: StreamEnd,
) -> Response {
    let mut events = Vec::new();
    let start_usage = Usage {
        output_tokens: 1,
        ..usage
    };
    events.push(sse(
        "message_start",
        &json!({
            "type": "message_start",
            "message": {
                "model": model,
                "id": id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": start_usage,
            }
        }),
        events.len(),
    ));
    events.push(sse(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        events.len(),
    ));
    events.push("event: ping\ndata: {\"type\": \"ping\"}\n\n".to_owned());
    for piece in &answer.pieces {
        events.push(sse(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            events.len(),
        ));
    }
    events.push(sse(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
        events.len(),
    ));
    // Cumulative usage, repeating the input counts as real traffic does.
    events.push(sse(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
            "usage": {
                "input_tokens": usage.input_tokens,
                "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "output_tokens": usage.output_tokens,
            }
        }),
        events.len(),
    ));
    events.push(sse(
        "message_stop",
        &json!({"type": "message_stop"}),
        events.len(),
    ));

    // Faults never let message_stop through.
    let before_stop = events.len() - 1;
    let mut abort = false;
    match end {
        StreamEnd::Complete => {}
        StreamEnd::Truncate(t) => {
            events.truncate((t.after_chunks as usize).min(before_stop));
            abort = t.abort;
        }
        StreamEnd::ErrorEvent(after) => {
            events.truncate((after as usize).min(before_stop));
            events.push(
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
                    .to_owned(),
            );
        }
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        super::chat::paced_sse(app, events, abort),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bp(tokens: u64, tag: u8, ttl: f64) -> Breakpoint {
        Breakpoint {
            prefix_tokens: tokens,
            digest: [tag; 32],
            ttl_secs: ttl,
        }
    }

    #[test]
    fn cache_writes_then_reads_then_expires() {
        let mut cache = PromptCache::default();
        let bps = [bp(2000, 1, 300.0)];
        let first = cache.apply(&bps, 0.0);
        assert_eq!((first.read, first.write_5m), (0, 2000));
        let second = cache.apply(&bps, 299.0);
        assert_eq!((second.read, second.write_5m), (2000, 0));
        // The read restarted the entry's lifetime.
        let third = cache.apply(&bps, 598.0);
        assert_eq!(third.read, 2000);
        let expired = cache.apply(&bps, 598.0 + 300.5);
        assert_eq!((expired.read, expired.write_5m), (0, 2000));
    }

    #[test]
    fn cache_reads_the_longest_live_prefix_and_writes_the_rest() {
        let mut cache = PromptCache::default();
        cache.apply(&[bp(1500, 1, 300.0)], 0.0);
        let both = [bp(1500, 1, 300.0), bp(4000, 2, 3600.0)];
        let out = cache.apply(&both, 1.0);
        assert_eq!((out.read, out.write_5m, out.write_1h), (1500, 0, 2500));
        let again = cache.apply(&both, 2.0);
        assert_eq!((again.read, again.write_1h), (4000, 0));
    }

    #[test]
    fn routes_of_anthropic() {
        assert!(serves("POST /v1/messages"));
        assert!(serves("POST /v1/messages/count_tokens"));
        assert!(!serves("POST /v1/chat/completions"));
        assert!(!serves("POST /v1/messagesx"));
    }

    #[test]
    fn sse_pads_before_the_last_brace() {
        let e = sse("message_stop", &json!({"type": "message_stop"}), 1);
        assert_eq!(
            e,
            "event: message_stop\ndata: {\"type\":\"message_stop\"          }\n\n"
        );
    }
}
