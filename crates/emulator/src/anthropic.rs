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

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::anthropic_wire::AnthropicError;
use crate::api::random_id;
use crate::app::App;
use crate::prompt_cache::Breakpoint;
use crate::tokens::Encoding;
use crate::wire::{ErrorEvent, RequestId, Truncate};

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
        .unwrap_or_else(crate::wire::anthropic_request_id);
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
        let mut store = app.lock_store();
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
    let max_tokens = parse_max_tokens(&map)?;
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
    let stop_sequences = parse_stop_sequences(&map)?;
    check_metadata(&map)?;
    if stream && max_tokens == 0 {
        return Err(AnthropicError::invalid(
            "max_tokens: 0 cannot be combined with stream: true",
        ));
    }
    let sampling = check_sampling(&map)?;

    // The model is checked after the body's shape, as the API reports a bad body first.
    let model = resolve_model(model_name, max_tokens, &sampling)?;
    let (units, last_user_text) = prompt_units(&map, messages, model)?;
    Ok(MessagesRequest {
        model,
        max_tokens: max_tokens as u64,
        stream,
        stop_sequences,
        units,
        last_user_text,
    })
}

/// `max_tokens`: required, an integer >= 0 (0 pre-warms the prompt cache and generates
/// nothing).
fn parse_max_tokens(map: &Map<String, Value>) -> Result<i64, AnthropicError> {
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
    if max_tokens < 0 {
        return Err(AnthropicError::invalid(
            "max_tokens: Input should be greater than or equal to 0",
        ));
    }
    Ok(max_tokens)
}

/// `stop_sequences`: a list of strings.
fn parse_stop_sequences(map: &Map<String, Value>) -> Result<Vec<String>, AnthropicError> {
    let items = match map.get("stop_sequences") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(AnthropicError::invalid(
                "stop_sequences: Input should be a valid list",
            ));
        }
    };
    items
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| AnthropicError::invalid("stop_sequences: Input should be a list of strings"))
}

/// `metadata`: an object holding at most `user_id`, a string.
fn check_metadata(map: &Map<String, Value>) -> Result<(), AnthropicError> {
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
    Ok(())
}

/// The model a request names, checked against what it asks of it (`max_tokens`, sampling).
fn resolve_model(
    model_name: &str,
    max_tokens: i64,
    sampling: &Sampling,
) -> Result<&'static ModelSpec, AnthropicError> {
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
    Ok(model)
}

/// The prompt as cacheable units in the API's order (tools, system, messages), with the
/// cache breakpoints, and the last user message's text.
fn prompt_units(
    map: &Map<String, Value>,
    messages: &[Value],
    model: &'static ModelSpec,
) -> Result<(Vec<Unit>, String), AnthropicError> {
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
    Ok((units, last_user_text))
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
    let mut hasher = Sha256::new();
    // Caches are model-scoped.
    hasher.update(request.model.id.as_bytes());
    hasher.update([0]);
    let mut total = 0;
    let mut breakpoints = Vec::new();
    for unit in &request.units {
        total += Encoding::O200kBase.count(&unit.text);
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
    let (pieces, cut) = Encoding::O200kBase.pieces(&text, Some(request.max_tokens));
    if cut {
        stop_reason = "max_tokens";
        stop_sequence = None;
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
        crate::wire::paced_sse(app, events, abort),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_pads_before_the_last_brace() {
        let e = sse("message_stop", &json!({"type": "message_stop"}), 1);
        assert_eq!(
            e,
            "event: message_stop\ndata: {\"type\":\"message_stop\"          }\n\n"
        );
    }
}
