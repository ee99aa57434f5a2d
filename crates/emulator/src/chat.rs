//! Chat completions (plain and streamed) and the Models API. Answers are deterministic
//! text naming the model and echoing the last user message; token counts use the
//! model's encoding from the emulator's table (the cookbook's method for prompts).

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::api::{self, ApiError, ApiResult, check_int, json, only_keys, opt_int, parse_object};
use crate::app::{App, ts};
use crate::jobs::Jobs;
use crate::models;
use crate::tokens::Encoding;
use crate::wire::{Truncate, paced_sse};

/// Request fields the API defines (anything else is "Unrecognized request argument").
const CHAT_KEYS: &[&str] = &[
    "messages",
    "model",
    "service_tier",
    "modalities",
    "verbosity",
    "reasoning_effort",
    "max_completion_tokens",
    "frequency_penalty",
    "presence_penalty",
    "web_search_options",
    "top_logprobs",
    "response_format",
    "audio",
    "store",
    "moderation",
    "stream",
    "stop",
    "logit_bias",
    "logprobs",
    "max_tokens",
    "n",
    "prediction",
    "seed",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "function_call",
    "functions",
    "prompt_cache_options",
    "metadata",
    "temperature",
    "top_p",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
];

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Longest echo of the user's message in an answer, in characters.
const ECHO_CHARS: usize = 400;

/// Largest chat request body.
const BODY_LIMIT: usize = 64 << 20;

/// A validated chat request.
struct ChatRequest {
    model: String,
    messages: Vec<Map<String, Value>>,
    stream: bool,
    include_usage: bool,
    include_obfuscation: bool,
    max_tokens: Option<u64>,
    n: u64,
    stop: Vec<String>,
}

fn parse_request(body: &[u8]) -> ApiResult<ChatRequest> {
    let map = parse_object(body)?;
    only_keys(&map, CHAT_KEYS)?;
    let model = parse_model(&map)?;
    let messages = parse_messages(&map)?;
    let (stream, include_usage, include_obfuscation) = parse_stream(&map)?;
    let max_tokens = parse_max_tokens(&map)?;
    let n = opt_int(&map, "n", "n", 1, 128)?.unwrap_or(1) as u64;
    let stop = parse_stop(&map)?;
    check_sampling(&map)?;
    Ok(ChatRequest {
        model,
        messages,
        stream,
        include_usage,
        include_obfuscation,
        max_tokens,
        n,
        stop,
    })
}

/// `model`: a non-empty string.
fn parse_model(map: &Map<String, Value>) -> ApiResult<String> {
    let model = match map.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(ApiError::wrong_type("model", "a string", other)),
    };
    model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("you must provide a model parameter"))
}

/// `messages`: a non-empty array of objects, each with a known role and a content.
fn parse_messages(map: &Map<String, Value>) -> ApiResult<Vec<Map<String, Value>>> {
    let messages = match map.get("messages") {
        None | Some(Value::Null) => return Err(ApiError::missing("messages")),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(ApiError::wrong_type("messages", "an array", other)),
    };
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        )
        .param("messages")
        .code("empty_array"));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| parse_message(i, m))
        .collect()
}

fn parse_message(i: usize, m: &Value) -> ApiResult<Map<String, Value>> {
    let Value::Object(m) = m else {
        return Err(ApiError::wrong_type(
            &format!("messages[{i}]"),
            "an object",
            m,
        ));
    };
    let role = match m.get("role") {
        Some(Value::String(r)) => r.as_str(),
        None => return Err(ApiError::missing(&format!("messages[{i}].role"))),
        Some(other) => {
            return Err(ApiError::wrong_type(
                &format!("messages[{i}].role"),
                "a string",
                other,
            ));
        }
    };
    if !ROLES.contains(&role) {
        return Err(ApiError::invalid(format!(
            "Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."
        ))
        .param(format!("messages[{i}].role"))
        .code("invalid_value"));
    }
    match m.get("content") {
        None | Some(Value::Null) if role == "assistant" => {}
        None => return Err(ApiError::missing(&format!("messages[{i}].content"))),
        Some(Value::String(_) | Value::Array(_)) => {}
        Some(other) => {
            return Err(ApiError::wrong_type(
                &format!("messages[{i}].content"),
                "a string or an array",
                other,
            ));
        }
    }
    Ok(m.clone())
}

/// `stream` and `stream_options`: whether to stream, and whether to add the usage chunk
/// and the `obfuscation` field.
fn parse_stream(map: &Map<String, Value>) -> ApiResult<(bool, bool, bool)> {
    let stream = match map.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(ApiError::wrong_type("stream", "a boolean", other)),
    };
    let (mut include_usage, mut include_obfuscation) = (false, true);
    match map.get("stream_options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            if !stream {
                return Err(ApiError::invalid(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                )
                .param("stream_options"));
            }
            include_usage = o
                .get("include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            include_obfuscation = o
                .get("include_obfuscation")
                .and_then(Value::as_bool)
                .unwrap_or(true);
        }
        Some(other) => return Err(ApiError::wrong_type("stream_options", "an object", other)),
    }
    Ok((stream, include_usage, include_obfuscation))
}

/// The smaller of `max_completion_tokens` and the deprecated `max_tokens`.
fn parse_max_tokens(map: &Map<String, Value>) -> ApiResult<Option<u64>> {
    let max_completion = opt_int(
        map,
        "max_completion_tokens",
        "max_completion_tokens",
        1,
        i64::MAX,
    )?;
    let max_tokens = opt_int(map, "max_tokens", "max_tokens", 1, i64::MAX)?;
    let least = match (max_completion, max_tokens) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(least.map(|v| v as u64))
}

/// `stop`: a string or up to 4 strings.
fn parse_stop(map: &Map<String, Value>) -> ApiResult<Vec<String>> {
    let items = match map.get("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(ApiError::wrong_type("stop", "a string or an array", other)),
    };
    check_int("stop", items.len() as i64, 0, 4).map_err(|_| {
        ApiError::invalid(format!(
            "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length {} instead.",
            items.len()
        ))
        .param("stop")
        .code("array_above_max_length")
    })?;
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(ApiError::wrong_type("stop", "a string", other)),
        })
        .collect()
}

/// `temperature`, `top_p` and the penalties: numbers in their ranges.
fn check_sampling(map: &Map<String, Value>) -> ApiResult<()> {
    for (key, min, max) in [
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("frequency_penalty", -2.0, 2.0),
        ("presence_penalty", -2.0, 2.0),
    ] {
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Number(x)) => {
                let x = x.as_f64().unwrap_or(f64::NAN);
                if !(min..=max).contains(&x) {
                    return Err(ApiError::invalid(format!(
                        "Invalid '{key}': expected a number between {min} and {max}, but got {x} instead."
                    ))
                    .param(key)
                    .code("invalid_value"));
                }
            }
            Some(other) => return Err(ApiError::wrong_type(key, "a number", other)),
        }
    }
    Ok(())
}

/// The text of a message's content: the string, or its text parts joined.
fn content_text(m: &Map<String, Value>) -> Vec<&str> {
    match m.get("content") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    }
}

/// Prompt tokens by the cookbook: 3 per message, the tokens of the role, content and name
/// (+1 for a name), and 3 to prime the reply.
fn prompt_tokens(messages: &[Map<String, Value>], encoding: Encoding) -> u64 {
    let mut total = 3;
    for m in messages {
        total += 3;
        if let Some(role) = m.get("role").and_then(Value::as_str) {
            total += encoding.count(role);
        }
        for text in content_text(m) {
            total += encoding.count(text);
        }
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            total += encoding.count(name) + 1;
        }
    }
    total
}

/// The answer's pieces (one per token), after `stop` and the token limit, and why it ended.
fn answer(model: &str, req: &ChatRequest, encoding: Encoding) -> (Vec<String>, &'static str) {
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m).join(" "))
        .unwrap_or_default();
    let echo: String = last_user.chars().take(ECHO_CHARS).collect();
    let mut text = if echo.trim().is_empty() {
        format!(
            "This is {model}, emulated by FineTune: no model ran, and there was no user message."
        )
    } else {
        format!("This is {model}, emulated by FineTune: no model ran. You said: {echo}")
    };
    let mut finish = "stop";
    if let Some(cut) = req.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
        text.truncate(cut);
    }
    let (pieces, cut) = encoding.pieces(&text, req.max_tokens);
    if cut {
        finish = "length";
    }
    (pieces, finish)
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize, Clone, Copy)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl Usage {
    fn new(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptDetails {
                cached_tokens: 0,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

/// `POST /chat/completions`.
pub(crate) async fn completions(State(app): State<App>, req: Request) -> ApiResult {
    let truncate = req.extensions().get::<Truncate>().copied();
    let body = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request body is too large.",
            )
        })?;
    let request = parse_request(&body)?;

    let now = app.clock.now();
    let (model, base) = {
        let store = app.store_at(now);
        resolve_chat_model(&app, &store.jobs, &request.model, now)?
    };
    let known = models::find(&base);
    let encoding = known.map_or(Encoding::O200kBase, |m| m.encoding);
    // Tokenizing a long prompt is CPU work: keep it off the async workers.
    let answer_model = model.clone();
    let (request, usage, pieces, finish) = tokio::task::spawn_blocking(move || {
        let prompt = prompt_tokens(&request.messages, encoding);
        let (pieces, finish) = answer(&answer_model, &request, encoding);
        let completion = pieces.len() as u64 * request.n;
        (request, Usage::new(prompt, completion), pieces, finish)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "chat completion task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request. Sorry about that!",
        )
        .kind("server_error")
    })?;
    if let Some(m) = known {
        check_context(m, usage.prompt_tokens)?;
    }
    let id = format!("chatcmpl-{}", api::random_id(29));
    let created = ts(now);
    let fingerprint = format!(
        "fp_{}",
        &hex::encode(Sha256::digest(model.as_bytes()))[..10]
    );
    let mut response = if request.stream {
        stream_response(
            &app,
            &request,
            id,
            created,
            model,
            fingerprint,
            usage,
            pieces,
            finish,
            truncate,
        )
    } else {
        #[derive(Serialize)]
        struct Message {
            role: &'static str,
            content: String,
            refusal: Option<String>,
            annotations: [(); 0],
        }
        #[derive(Serialize)]
        struct Choice {
            index: u64,
            message: Message,
            logprobs: Option<Value>,
            finish_reason: &'static str,
        }
        #[derive(Serialize)]
        struct Completion {
            id: String,
            object: &'static str,
            created: i64,
            model: String,
            choices: Vec<Choice>,
            usage: Usage,
            service_tier: &'static str,
            system_fingerprint: String,
        }
        let content = pieces.concat();
        json(&Completion {
            id,
            object: "chat.completion",
            created,
            model,
            choices: (0..request.n)
                .map(|index| Choice {
                    index,
                    message: Message {
                        role: "assistant",
                        content: content.clone(),
                        refusal: None,
                        annotations: [],
                    },
                    logprobs: None,
                    finish_reason: finish,
                })
                .collect(),
            usage,
            service_tier: "default",
            system_fingerprint: fingerprint,
        })
    };
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit-requests", "30000".to_owned()),
        ("x-ratelimit-remaining-requests", "29999".to_owned()),
        ("x-ratelimit-reset-requests", "2ms".to_owned()),
        ("x-ratelimit-limit-tokens", "150000000".to_owned()),
        (
            "x-ratelimit-remaining-tokens",
            (150_000_000 - usage.prompt_tokens.min(150_000_000)).to_string(),
        ),
        ("x-ratelimit-reset-tokens", "0s".to_owned()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    Ok(response)
}

/// A prompt longer than the model's context window is refused. The window is the table's
/// (`reference/openai-api.md` section 6); the error's code and wording are OpenAI's as its
/// API answers them, which no file in `reference/` records.
fn check_context(model: &models::Model, prompt_tokens: u64) -> ApiResult<()> {
    if prompt_tokens <= model.context_window {
        return Ok(());
    }
    Err(ApiError::invalid(format!(
        "This model's maximum context length is {} tokens. However, your messages resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
        model.context_window
    ))
    .param("messages")
    .code("context_length_exceeded"))
}

/// The model as the response names it, and its base snapshot. Unknown models are the
/// API's 404 `model_not_found`.
fn resolve_chat_model(
    app: &App,
    jobs: &Jobs,
    model: &str,
    now: f64,
) -> ApiResult<(String, String)> {
    if model.starts_with("ft:") {
        if let Some(base) = jobs.fine_tuned_base(model, now, &app.config.org) {
            return Ok((model.to_owned(), base.to_owned()));
        }
    } else {
        if let Some(m) = models::find(model) {
            return Ok((m.name.to_owned(), m.name.to_owned()));
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!("The model `{model}` does not exist or you do not have access to it."),
    )
    .code("model_not_found"))
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the pieces of a response are clearer named than bundled"
)]
fn stream_response(
    app: &App,
    request: &ChatRequest,
    id: String,
    created: i64,
    model: String,
    fingerprint: String,
    usage: Usage,
    pieces: Vec<String>,
    finish: &'static str,
    truncate: Option<Truncate>,
) -> Response {
    #[derive(Serialize)]
    struct Delta<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        refusal: Option<Option<()>>,
    }
    #[derive(Serialize)]
    struct Choice<'a> {
        index: u64,
        delta: Delta<'a>,
        logprobs: Option<()>,
        finish_reason: Option<&'static str>,
    }
    #[derive(Serialize)]
    struct Chunk<'a> {
        id: &'a str,
        object: &'static str,
        created: i64,
        model: &'a str,
        service_tier: &'static str,
        system_fingerprint: &'a str,
        choices: Vec<Choice<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<Option<Usage>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        obfuscation: Option<String>,
    }
    let include_usage = request.include_usage;
    let obfuscate = request.include_obfuscation;
    let chunk = |choices: Vec<Choice<'_>>, usage_value: Option<Usage>| -> String {
        let content_len: usize = choices
            .iter()
            .filter_map(|c| c.delta.content.map(str::len))
            .sum();
        let c = Chunk {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model: &model,
            service_tier: "default",
            system_fingerprint: &fingerprint,
            choices,
            usage: include_usage.then_some(usage_value),
            // Pads small chunks, as OpenAI does against length side channels.
            obfuscation: obfuscate
                .then(|| api::random_id(12usize.saturating_sub(content_len).max(1))),
        };
        format!(
            "data: {}\n\n",
            serde_json::to_string(&c).unwrap_or_default()
        )
    };
    let mut events: Vec<String> = Vec::new();
    for index in 0..request.n {
        events.push(chunk(
            vec![Choice {
                index,
                delta: Delta {
                    role: Some("assistant"),
                    content: Some(""),
                    refusal: Some(None),
                },
                logprobs: None,
                finish_reason: None,
            }],
            None,
        ));
    }
    for piece in &pieces {
        for index in 0..request.n {
            events.push(chunk(
                vec![Choice {
                    index,
                    delta: Delta {
                        role: None,
                        content: Some(piece),
                        refusal: None,
                    },
                    logprobs: None,
                    finish_reason: None,
                }],
                None,
            ));
        }
    }
    for index in 0..request.n {
        events.push(chunk(
            vec![Choice {
                index,
                delta: Delta {
                    role: None,
                    content: None,
                    refusal: None,
                },
                logprobs: None,
                finish_reason: Some(finish),
            }],
            None,
        ));
    }
    if include_usage {
        events.push(chunk(Vec::new(), Some(usage)));
    }
    events.push("data: [DONE]\n\n".to_owned());

    let (keep, abort) = match truncate {
        Some(t) => (t.after_chunks as usize, t.abort),
        None => (events.len(), false),
    };
    events.truncate(keep);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")],
        paced_sse(app, events, abort),
    )
        .into_response()
}

/// A `model` object.
#[derive(Serialize)]
struct ModelObject {
    id: String,
    object: &'static str,
    created: i64,
    owned_by: String,
}

/// When base models are said to have been created (a fixed, plausible date).
const BASE_MODEL_CREATED: i64 = 1_721_172_741;

fn base_models() -> Vec<ModelObject> {
    let mut out = Vec::new();
    for m in models::MODELS {
        for name in std::iter::once(&m.name).chain(m.aliases.iter()) {
            out.push(ModelObject {
                id: (*name).to_owned(),
                object: "model",
                created: BASE_MODEL_CREATED,
                owned_by: "system".to_owned(),
            });
        }
    }
    out
}

/// `GET /models`.
pub(crate) async fn list_models(State(app): State<App>) -> ApiResult {
    #[derive(Serialize)]
    struct ModelList {
        object: &'static str,
        data: Vec<ModelObject>,
    }
    let now = app.clock.now();
    let mut data = base_models();
    let fine_tuned = app
        .store_at(now)
        .jobs
        .fine_tuned_models(now, &app.config.org);
    data.extend(fine_tuned.into_iter().map(|(id, created)| ModelObject {
        id,
        object: "model",
        created,
        owned_by: app.config.org.clone(),
    }));
    Ok(json(&ModelList {
        object: "list",
        data,
    }))
}

/// `GET /models/{id}`.
pub(crate) async fn get_model(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let now = app.clock.now();
    if let Some(m) = base_models().into_iter().find(|m| m.id == id) {
        return Ok(json(&m));
    }
    let fine_tuned = app
        .store_at(now)
        .jobs
        .fine_tuned_models(now, &app.config.org);
    if let Some((name, created)) = fine_tuned.into_iter().find(|(n, _)| *n == id) {
        return Ok(json(&ModelObject {
            id: name,
            object: "model",
            created,
            owned_by: app.config.org.clone(),
        }));
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!("The model '{id}' does not exist"),
    )
    .param("model")
    .code("model_not_found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_over_the_context_window_is_refused() {
        let m = models::find("gpt-3.5-turbo-0613").expect("in the table");
        assert!(check_context(m, 16_385).is_ok());
        let e = check_context(m, 16_386).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert!(e.message.contains("16385 tokens"), "{}", e.message);
    }
}
