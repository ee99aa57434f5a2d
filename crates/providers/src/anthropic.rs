//! The Anthropic adapter: the [`Chat`] port over the Messages API (`POST /v1/messages`),
//! plain and streamed (SSE), with prompt caching of system blocks.
//!
//! One HTTP call per operation and no retries (the caller owns the retry policy). Every
//! failure is classified into an [`UpstreamError`] from the status and Anthropic's error
//! envelope `{"type":"error","error":{"type","message"},"request_id"}`; messages never
//! carry the API key or a raw response body. Wire shapes follow
//! `reference/anthropic-api.md` and the recorded traffic beside it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures_util::stream::{self, Stream, StreamExt as _};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio_util::bytes::Bytes;

use finetune_core::ports::UpstreamError;
use finetune_core::ports::chat::{
    Chat, ChatChunk, ChatMessage, ChatRequest, ChatResponse, ChatRole, ChatStream, ChatUsage,
    FinishReason,
};
use finetune_core::ports::retry::{Failure, RetryPolicy, attempt_timeout};
/// Anthropic key shapes.
const KEY_SHAPES: &str = r"\bsk-ant-[A-Za-z0-9_\-]{4,}";

use crate::http::{
    Redactor, describe_content, describe_json_error, install_crypto_provider, refusal_of_status,
    send_once, transport_error, truncate,
};
use finetune_core::error::Error;

/// The `provider` of every error this adapter returns.
const PROVIDER: &str = "anthropic";
/// The `anthropic-version` header every request carries (named SSE events, incremental
/// deltas, no `data: [DONE]`).
pub const API_VERSION: &str = "2023-06-01";

/// Connecting never waits longer than this, whatever the call's deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to reach Anthropic. The caller gives every setting (the server reads them
/// in its configuration); the adapter reads no environment.
#[derive(Clone)]
pub struct AnthropicConfig {
    /// The `x-api-key` sent with every request (never logged: `Debug` redacts it).
    pub api_key: String,
    /// The API root, without `/v1` (the official SDKs' `ANTHROPIC_BASE_URL`).
    pub base_url: String,
    /// Deadline of a plain call, and the longest wait for the next bytes of a stream.
    pub timeout: Duration,
    /// Retries of failed calls (streams only until they open).
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("api_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl AnthropicConfig {
    /// Anthropic's public API root, for a caller without its own `base_url`.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.anthropic.com";

    /// A configuration with the SDKs' default timeout (600 s).
    pub fn new(api_key: impl Into<String>, base_url: impl Into<String>) -> AnthropicConfig {
        AnthropicConfig {
            api_key: api_key.into(),
            base_url: base_url.into(),
            timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
        }
    }
}

/// The Anthropic Messages client. Cheap to clone (the HTTP client is shared).
#[derive(Clone)]
pub struct Anthropic {
    http: reqwest::Client,
    messages_url: Url,
    timeout: Duration,
    retry: RetryPolicy,
    redactor: Arc<Redactor>,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic")
            .field("messages_url", &self.messages_url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Anthropic {
    /// A client for `config`; fails on an empty key, a malformed base URL or a key HTTP
    /// cannot carry (none of them echoed).
    pub fn new(config: AnthropicConfig) -> Result<Anthropic, Error> {
        install_crypto_provider();
        let key = config.api_key.trim();
        if key.is_empty() {
            return Err(Error::Config("the Anthropic API key is empty".to_owned()));
        }
        let messages_url = messages_url(&config.base_url)?;
        let mut headers = HeaderMap::new();
        let mut api_key = HeaderValue::from_str(key).map_err(|_| {
            Error::Config(
                "the Anthropic API key contains characters not allowed in a header".into(),
            )
        })?;
        api_key.set_sensitive(true);
        headers.insert(HeaderName::from_static("x-api-key"), api_key);
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        // No whole-call timeout on the client: a stream may rightly last longer than any
        // one read. Plain calls set their deadline per request.
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("finetune/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT.min(config.timeout))
            .read_timeout(config.timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the Anthropic HTTP client: {e}")))?;
        Ok(Anthropic {
            http,
            messages_url,
            timeout: config.timeout,
            retry: config.retry,
            redactor: Arc::new(Redactor::new(key, KEY_SHAPES)),
        })
    }

    /// Sends the request, retrying as the policy says (a stream only until it opens);
    /// a non-2xx answer is read and classified.
    async fn send(
        &self,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let body = MessagesBody::new(request, stream);
        let built = self
            .http
            .post(self.messages_url.clone())
            .json(&body)
            .build()
            .map_err(|e| self.transport_error(&e))?;
        let what = if stream { "message stream" } else { "message" };
        self.retry
            .run(what, request.deadline, || async {
                let mut attempt = built.try_clone().ok_or_else(|| {
                    Failure::from(UpstreamError::Protocol {
                        provider: PROVIDER,
                        message: "a request to retry has a streamed body".into(),
                    })
                })?;
                if !stream {
                    *attempt.timeout_mut() = Some(attempt_timeout(self.timeout, request.deadline));
                }
                send_once(
                    &self.http,
                    attempt,
                    &self.retry,
                    PROVIDER,
                    |e| self.transport_error(e),
                    |status, headers, body| self.status_error(status, headers, body),
                )
                .await
            })
            .await
    }

    /// Classifies a non-2xx response: the status decides the kind, the error envelope
    /// (when there is one) supplies the message and the error type.
    fn status_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
        let code = status.as_u16();
        let envelope = serde_json::from_slice::<ErrorEnvelope>(body).ok();
        let request_id = headers
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| envelope.as_ref().and_then(|e| e.request_id.clone()));
        let message = match &envelope {
            Some(e) if !e.error.message.trim().is_empty() => {
                self.message(&e.error.message, request_id.as_deref())
            }
            _ => format!(
                "HTTP {code} without an Anthropic error body ({})",
                describe_content(headers, body.len())
            ),
        };
        let kind = envelope.map(|e| e.error.kind);
        // 400 invalid_request_error, 402 billing_error, 413 request_too_large, 408, 409...
        crate::http::status_error(PROVIDER, code, headers, message, |message| {
            UpstreamError::Rejected {
                provider: PROVIDER,
                status: code,
                code: kind.map(|k| self.redactor.clean(&k)),
                param: None,
                // Anthropic names no parameter: the status is all there is to go on.
                refusal: refusal_of_status(code),
                message,
            }
        })
    }

    /// The provider's message, cleaned, with the request id support asks for.
    fn message(&self, text: &str, request_id: Option<&str>) -> String {
        let text = self.redactor.clean(text);
        match request_id.filter(|id| is_plain_id(id)) {
            Some(id) => format!("{text} (request {id})"),
            None => text,
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> UpstreamError {
        transport_error(PROVIDER, self.timeout, &self.redactor, e)
    }
}

#[async_trait::async_trait]
impl Chat for Anthropic {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, UpstreamError> {
        let response = self.send(request, false).await?;
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let message: WireMessage =
            serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol {
                provider: PROVIDER,
                message: format!(
                    "expected a message as JSON, got {} ({})",
                    describe_content(&headers, body.len()),
                    describe_json_error(&e)
                ),
            })?;
        // Text blocks only, by type rather than position: thinking, redacted_thinking,
        // tool_use and server tool blocks carry no answer text.
        let text = message
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect();
        Ok(ChatResponse {
            id: message.id,
            model: message.model,
            text,
            finish_reason: finish_reason(message.stop_reason.as_deref()),
            raw_finish_reason: message.stop_reason.unwrap_or_default(),
            usage: message.usage.normalise(),
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, UpstreamError> {
        let response = self.send(request, true).await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.is_empty() && !content_type.starts_with("text/event-stream") {
            return Err(UpstreamError::Protocol {
                provider: PROVIDER,
                message: format!(
                    "expected an event stream, got {}",
                    describe_content(response.headers(), 0)
                ),
            });
        }
        // SSE dispatches an event only at a blank line; a body whose last event lacks
        // one (the SDKs' own fixtures do) would lose it, so the end of the body adds one.
        // The response moves into the stream: dropping the stream drops the request.
        let bytes = response
            .bytes_stream()
            .chain(stream::once(async { Ok(Bytes::from_static(b"\n\n")) }));
        let events: EventStream = Box::pin(bytes.eventsource());
        let state = StreamState {
            events,
            decoder: Decoder::default(),
            adapter: self.clone(),
            finished: false,
        };
        Ok(Box::pin(stream::unfold(state, next_chunk)))
    }
}

type EventStream =
    Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

struct StreamState {
    events: EventStream,
    decoder: Decoder,
    adapter: Anthropic,
    finished: bool,
}

/// The next item of a streamed answer: deltas, then `Done` or one error, then the end.
async fn next_chunk(
    mut state: StreamState,
) -> Option<(Result<ChatChunk, UpstreamError>, StreamState)> {
    if state.finished {
        return None;
    }
    loop {
        let item = match state.events.next().await {
            None => Err(UpstreamError::Unavailable {
                provider: PROVIDER,
                status: None,
                message: "stream ended before message_stop".to_owned(),
            }),
            Some(Err(EventStreamError::Transport(e))) => Err(state.adapter.transport_error(&e)),
            Some(Err(e)) => Err(UpstreamError::Protocol {
                provider: PROVIDER,
                message: format!("unreadable event stream: {}", truncate(&e.to_string(), 200)),
            }),
            Some(Ok(event)) => match state.decoder.on_event(&event, &state.adapter.redactor) {
                Ok(None) => continue,
                Ok(Some(chunk)) => Ok(chunk),
                Err(e) => Err(e),
            },
        };
        state.finished = !matches!(item, Ok(ChatChunk::Delta(_)));
        return Some((item, state));
    }
}

/// The state of one streamed message, fed event by event.
#[derive(Default)]
struct Decoder {
    started: bool,
    id: String,
    model: String,
    text: String,
    stop_reason: Option<String>,
    usage: WireUsage,
    /// The type of each open content block, by index.
    blocks: Vec<(u64, String)>,
}

impl Decoder {
    /// Handles one event: a text delta, the end of the message, nothing (ping, thinking,
    /// tool input, unknown events), or an error.
    fn on_event(
        &mut self,
        event: &Event,
        redactor: &Redactor,
    ) -> Result<Option<ChatChunk>, UpstreamError> {
        let data: StreamEvent =
            serde_json::from_str(&event.data).map_err(|e| UpstreamError::Protocol {
                provider: PROVIDER,
                message: format!(
                    "event {:?} is not the expected JSON ({})",
                    truncate(&event.event, 40),
                    describe_json_error(&e)
                ),
            })?;
        // Dispatch on the event name; an unnamed event falls back to the data's type.
        let name = if event.event == "message" {
            data.kind.as_deref().unwrap_or("message")
        } else {
            event.event.as_str()
        };
        match name {
            "message_start" => {
                let message = data
                    .message
                    .ok_or_else(|| missing("message_start", "message"))?;
                self.started = true;
                self.id = message.id;
                self.model = message.model;
                self.usage.overwrite(&message.usage);
                Ok(None)
            }
            "content_block_start" => {
                let block = data
                    .content_block
                    .ok_or_else(|| missing("content_block_start", "content_block"))?;
                let index = data.index.unwrap_or(0);
                self.blocks.retain(|(i, _)| *i != index);
                self.blocks.push((index, block.kind.clone()));
                match block.text {
                    Some(text) if block.kind == "text" && !text.is_empty() => {
                        Ok(Some(self.delta(text)))
                    }
                    _ => Ok(None),
                }
            }
            "content_block_delta" => {
                let delta = data
                    .delta
                    .ok_or_else(|| missing("content_block_delta", "delta"))?;
                let index = data.index.unwrap_or(0);
                let in_text_block = self
                    .blocks
                    .iter()
                    .find(|(i, _)| *i == index)
                    .is_none_or(|(_, kind)| kind == "text");
                // thinking_delta, signature_delta, input_json_delta, citations_delta: no text.
                match (delta.kind.as_deref(), delta.text) {
                    (Some("text_delta"), Some(text)) if in_text_block && !text.is_empty() => {
                        Ok(Some(self.delta(text)))
                    }
                    _ => Ok(None),
                }
            }
            "message_delta" => {
                if let Some(delta) = data.delta {
                    if delta.stop_reason.is_some() {
                        self.stop_reason = delta.stop_reason;
                    }
                }
                // Cumulative counts: each field present replaces the one before.
                if let Some(usage) = &data.usage {
                    self.usage.overwrite(usage);
                }
                Ok(None)
            }
            "message_stop" => {
                if !self.started {
                    return Err(UpstreamError::Protocol {
                        provider: PROVIDER,
                        message: "message_stop arrived before message_start".to_owned(),
                    });
                }
                Ok(Some(ChatChunk::Done(ChatResponse {
                    id: std::mem::take(&mut self.id),
                    model: std::mem::take(&mut self.model),
                    text: std::mem::take(&mut self.text),
                    finish_reason: finish_reason(self.stop_reason.as_deref()),
                    raw_finish_reason: self.stop_reason.take().unwrap_or_default(),
                    usage: self.usage.normalise(),
                })))
            }
            "error" => {
                let error = data.error.unwrap_or_default();
                Err(stream_error(&error, redactor))
            }
            // ping, content_block_stop, and event types added after this was written.
            _ => Ok(None),
        }
    }

    fn delta(&mut self, text: String) -> ChatChunk {
        self.text.push_str(&text);
        ChatChunk::Delta(text)
    }
}

fn missing(event: &str, field: &str) -> UpstreamError {
    UpstreamError::Protocol {
        provider: PROVIDER,
        message: format!("{event} without {field}"),
    }
}

/// The neutral finish reason of a Messages `stop_reason`.
fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        // The safety classifiers stopped the answer: content withheld.
        Some("refusal") => FinishReason::ContentFilter,
        // tool_use, pause_turn, model_context_window_exceeded, anything newer, or none.
        _ => FinishReason::Other,
    }
}

/// An `event: error` after HTTP 200, classified like the status its type stands for.
fn stream_error(error: &WireError, redactor: &Redactor) -> UpstreamError {
    let message = if error.message.trim().is_empty() {
        format!("error event of type {:?}", truncate(&error.kind, 60))
    } else {
        redactor.clean(&error.message)
    };
    let status = match error.kind.as_str() {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        // An unknown type broke a stream the server had accepted: the server's fault.
        _ => {
            return UpstreamError::Unavailable {
                provider: PROVIDER,
                status: None,
                message,
            };
        }
    };
    match status {
        429 => UpstreamError::RateLimited {
            provider: PROVIDER,
            message,
            retry_after: None,
        },
        401 | 403 => UpstreamError::Auth {
            provider: PROVIDER,
            status,
            message,
        },
        404 => UpstreamError::NotFound {
            provider: PROVIDER,
            message,
        },
        500.. => UpstreamError::Unavailable {
            provider: PROVIDER,
            status: Some(status),
            message,
        },
        _ => UpstreamError::Rejected {
            provider: PROVIDER,
            status,
            code: Some(redactor.clean(&error.kind)),
            param: None,
            refusal: refusal_of_status(status),
            message,
        },
    }
}

// ---- Wire types -------------------------------------------------------------------

/// The body of `POST /v1/messages`.
#[derive(Serialize)]
struct MessagesBody<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<TextBlock<'a>>,
    messages: Vec<MessageParam<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<CacheControl>,
}

#[derive(Serialize)]
struct CacheControl {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct MessageParam<'a> {
    role: &'static str,
    content: Content<'a>,
}

/// A turn's content: the string shorthand, or text blocks when turns were merged.
#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    Blocks(Vec<TextBlock<'a>>),
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

impl<'a> MessagesBody<'a> {
    fn new(request: &'a ChatRequest, stream: bool) -> MessagesBody<'a> {
        let system = request
            .system
            .iter()
            .map(|b| TextBlock {
                kind: "text",
                text: &b.text,
                cache_control: b.cache.then_some(CacheControl { kind: "ephemeral" }),
            })
            .collect();
        // Sonnet 5 and 5.5 answer 400 to any non-default sampling parameter.
        let temperature = request
            .temperature
            .filter(|_| accepts_temperature(&request.model));
        if temperature.is_none() && request.temperature.is_some() {
            tracing::debug!(model = %request.model, "temperature dropped: the model rejects it");
        }
        MessagesBody {
            model: &request.model,
            max_tokens: request.max_tokens,
            system,
            messages: merge_turns(&request.messages),
            temperature,
            stop_sequences: &request.stop,
            metadata: request
                .user
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(|user_id| Metadata { user_id }),
            stream,
        }
    }
}

/// Whether the model takes `temperature` (Sonnet 5 and later reject sampling parameters).
fn accepts_temperature(model: &str) -> bool {
    !model.starts_with("claude-sonnet-5")
}

/// The turns as the API reads them: consecutive turns of one role become one turn of
/// several text blocks (what the API itself would do, said without ambiguity).
fn merge_turns(messages: &[ChatMessage]) -> Vec<MessageParam<'_>> {
    let role = |r: ChatRole| match r {
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
    };
    let text_block = |text| TextBlock {
        kind: "text",
        text,
        cache_control: None,
    };
    let mut out: Vec<MessageParam<'_>> = Vec::with_capacity(messages.len());
    for m in messages {
        match out.last_mut() {
            Some(last) if last.role == role(m.role) => match &mut last.content {
                Content::Text(first) => {
                    last.content =
                        Content::Blocks(vec![text_block(*first), text_block(&m.content)]);
                }
                Content::Blocks(blocks) => blocks.push(text_block(&m.content)),
            },
            _ => out.push(MessageParam {
                role: role(m.role),
                content: Content::Text(&m.content),
            }),
        }
    }
    out
}

/// A `Message` object; only what the adapter reads.
#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// `usage` as sent: `input_tokens` counts only the uncached remainder of the prompt.
#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    fn overwrite(&mut self, newer: &WireUsage) {
        let keep = |old: &mut Option<u64>, new: Option<u64>| {
            if new.is_some() {
                *old = new;
            }
        };
        keep(&mut self.input_tokens, newer.input_tokens);
        keep(&mut self.output_tokens, newer.output_tokens);
        keep(
            &mut self.cache_creation_input_tokens,
            newer.cache_creation_input_tokens,
        );
        keep(
            &mut self.cache_read_input_tokens,
            newer.cache_read_input_tokens,
        );
    }

    /// Our usage: the whole prompt in `input_tokens`, its cached parts beside it.
    fn normalise(&self) -> ChatUsage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        ChatUsage {
            input_tokens: self.input_tokens.unwrap_or(0) + read + write,
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_read_tokens: read,
            cache_write_tokens: write,
        }
    }
}

/// The `data` of any stream event; each kind fills its own fields.
#[derive(Deserialize)]
struct StreamEvent {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<WireStartMessage>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    content_block: Option<WireBlock>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireStartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: WireUsage,
}

/// A content block delta or a message delta.
#[derive(Deserialize)]
struct WireDelta {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: WireError,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

// ---- Helpers ----------------------------------------------------------------------

/// `{base}/v1/messages`, keeping any path prefix the base has (a proxy's).
fn messages_url(raw: &str) -> Result<Url, Error> {
    let mut url = Url::parse(raw.trim())
        .map_err(|e| Error::Config(format!("the Anthropic base URL is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::Config(
            "the Anthropic base URL must be an http(s) URL such as https://api.anthropic.com"
                .into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Config(
            "the Anthropic base URL must not have a query or fragment".into(),
        ));
    }
    url.path_segments_mut()
        .map_err(|()| Error::Config("the Anthropic base URL cannot take a path".into()))?
        .pop_if_empty()
        .extend(["v1", "messages"]);
    Ok(url)
}

/// Request ids are quoted in messages only when they look like ids.
fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_are_normalised_and_unknown_ones_are_other() {
        let cases = [
            (Some("end_turn"), FinishReason::Stop),
            (Some("stop_sequence"), FinishReason::Stop),
            (Some("max_tokens"), FinishReason::Length),
            (Some("refusal"), FinishReason::ContentFilter),
            (Some("tool_use"), FinishReason::Other),
            (Some("pause_turn"), FinishReason::Other),
            // OpenAI's words mean nothing from Anthropic.
            (Some("stop"), FinishReason::Other),
            (Some("a_reason_from_next_year"), FinishReason::Other),
            (None, FinishReason::Other),
        ];
        for (raw, want) in cases {
            assert_eq!(finish_reason(raw), want, "{raw:?}");
        }
    }
}
