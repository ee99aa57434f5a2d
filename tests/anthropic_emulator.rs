//! The Anthropic adapter against the emulator's `/v1/messages`: plain and streamed answers
//! agree, prompt caching of an 18K-token knowledge base (write, then read; nothing below
//! the minimum), injected faults (truncated stream, in-stream error event, 429, 529),
//! errors (unknown model, missing version header, auth, body validation), and that the
//! emulator's responses keep the shapes of Anthropic's recorded traffic.

use crate::common::{self, anthropic::collect};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use finetune_core::dataset::{Counter, Encoding};
use finetune_core::ports::RetryPolicy;
use finetune_core::ports::UpstreamError;
use finetune_core::ports::chat::{
    Chat, ChatChunk, ChatMessage, ChatRequest, ChatRole, SystemBlock,
};
use finetune_emulator::{Emulator, EmulatorConfig, Fault};
use finetune_providers::anthropic::{Anthropic, AnthropicConfig};
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "sk-ant-test";
const ROUTE: &str = "POST /v1/messages";

struct Env {
    emu: Emulator,
    adapter: Anthropic,
    http: reqwest::Client,
}

async fn start() -> Env {
    start_with(EmulatorConfig {
        token_secs: 0.0,
        ..EmulatorConfig::default()
    })
    .await
}

async fn start_with(config: EmulatorConfig) -> Env {
    let emu = common::emulator_with(config).await;
    let base = emu.anthropic_base_url();
    assert!(
        base.starts_with("http://127.0.0.1:") && !base.ends_with("/v1"),
        "{base}"
    );
    let mut config = AnthropicConfig::new(KEY, base);
    config.timeout = Duration::from_secs(30);
    // One exchange per call: these tests check the emulator's answers and faults one by
    // one (the retries have their own tests, tests/faults.rs).
    config.retry = RetryPolicy::none();
    Env {
        adapter: Anthropic::new(config).unwrap(),
        emu,
        http: reqwest::Client::new(),
    }
}

impl Env {
    /// A raw `POST /v1/messages` with the given headers; the reply as status, headers, text.
    async fn raw(
        &self,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut request = self
            .http
            .post(format!("{}/v1/messages", self.emu.anthropic_base_url()))
            .json(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    /// A raw request with the API's headers, answered as JSON.
    async fn post(&self, body: &Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let (status, headers, text) = self
            .raw(
                &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
                body,
            )
            .await;
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, headers, json)
    }

    /// Expects a 400 `invalid_request_error` with `message`.
    async fn invalid(&self, body: Value, message: &str) {
        let (status, _, reply) = self.post(&body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
        assert_eq!(reply["error"]["type"], "invalid_request_error", "{reply}");
        assert_eq!(reply["error"]["message"], message, "{body}");
    }
}

fn request(model: &str, system: Vec<SystemBlock>, question: &str) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        system,
        messages: vec![ChatMessage {
            role: ChatRole::User,
            content: question.to_owned(),
        }],
        temperature: None,
        max_tokens: 1024,
        stop: Vec::new(),
        user: Some("u-1".to_owned()),
        deadline: None,
    }
}

fn block(text: &str, cache: bool) -> SystemBlock {
    SystemBlock {
        text: text.to_owned(),
        cache,
    }
}

/// A knowledge base of about `target` o200k tokens, and its exact count.
fn knowledge_base(target: u64) -> (String, u64) {
    let mut counter = Counter::new(Encoding::O200kBase);
    let mut text = String::from("File Engine knowledge base.\n");
    let mut approx = counter.count(&text);
    let mut i = 0u64;
    while approx < target {
        let line = format!(
            "Article {i}: a file in bucket {} is kept for {} days, replicated {} times, and billed at tier {}.\n",
            i * 7 % 13,
            30 + i % 60,
            1 + i % 3,
            i % 5
        );
        approx += counter.count(&line);
        text.push_str(&line);
        i += 1;
    }
    let exact = counter.count(&text);
    (text, exact)
}

fn tokens(text: &str) -> u64 {
    Counter::new(Encoding::O200kBase).count(text)
}

#[tokio::test]
async fn plain_and_streamed_answers_agree() {
    let env = start().await;
    let req = request(
        "claude-sonnet-4-5",
        vec![block("Answer briefly.", false)],
        "What is File Engine?",
    );
    let plain = env.adapter.complete(&req).await.unwrap();
    // The alias resolves to the dated id, as in the recorded traffic.
    assert_eq!(plain.model, "claude-sonnet-4-5-20250929");
    assert!(plain.id.starts_with("msg_01"), "{}", plain.id);
    assert!(
        plain.text.contains("claude-sonnet-4-5-20250929"),
        "{}",
        plain.text
    );
    assert!(
        plain.text.ends_with("You said: What is File Engine?"),
        "{}",
        plain.text
    );
    assert_eq!(plain.raw_finish_reason, "end_turn");
    assert_eq!(plain.usage.output_tokens, tokens(&plain.text));
    assert_eq!(
        plain.usage.input_tokens,
        tokens("Answer briefly.") + tokens("What is File Engine?")
    );
    assert_eq!(
        (
            plain.usage.cache_read_tokens,
            plain.usage.cache_write_tokens
        ),
        (0, 0)
    );

    let streamed = collect(&env.adapter, &req).await;
    let done = streamed.end.unwrap();
    assert!(streamed.deltas.len() > 5, "{:?}", streamed.deltas);
    assert_eq!(streamed.deltas.concat(), plain.text);
    assert_eq!(done.text, plain.text);
    assert_eq!(done.model, plain.model);
    assert_eq!(done.finish_reason, plain.finish_reason);
    assert_eq!(done.usage, plain.usage);
    assert_ne!(done.id, plain.id);

    assert_eq!(env.emu.stats().count(ROUTE), 2);
    let sent = env.emu.last_requests(ROUTE);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].get("stream"), None);
    assert_eq!(sent[1]["stream"], true);
    assert_eq!(sent[0]["metadata"], json!({"user_id": "u-1"}));
    assert_eq!(
        sent[0]["system"],
        json!([{"type": "text", "text": "Answer briefly."}])
    );
}

#[tokio::test]
async fn an_18k_token_knowledge_base_is_written_then_read() {
    let env = start().await;
    let (kb, kb_tokens) = knowledge_base(18_000);
    assert!((18_000..18_200).contains(&kb_tokens), "{kb_tokens}");
    let system = vec![block(&kb, true), block("Answer briefly.", false)];
    let first = request(
        "claude-sonnet-5-5",
        system.clone(),
        "How long are files kept?",
    );
    let total = kb_tokens + tokens("Answer briefly.") + tokens("How long are files kept?");

    let write = env.adapter.complete(&first).await.unwrap();
    assert_eq!(write.usage.cache_write_tokens, kb_tokens);
    assert_eq!(write.usage.cache_read_tokens, 0);
    assert_eq!(write.usage.input_tokens, total);

    // What the adapter sent: the knowledge base block carries the breakpoint.
    let sent = env.emu.last_requests(ROUTE);
    let sent_system = &sent.last().unwrap()["system"];
    assert_eq!(
        sent_system[0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert_eq!(sent_system[0]["text"].as_str().unwrap().len(), kb.len());
    assert!(sent_system[1].get("cache_control").is_none());

    // The identical request, streamed: read from the cache.
    let read = collect(&env.adapter, &first).await.end.unwrap();
    assert_eq!(read.usage.cache_read_tokens, kb_tokens);
    assert_eq!(read.usage.cache_write_tokens, 0);
    assert_eq!(read.usage.input_tokens, total);

    // Another question after the same prefix reads it too.
    let other = request("claude-sonnet-5-5", system.clone(), "Who pays?");
    let again = env.adapter.complete(&other).await.unwrap();
    assert_eq!(
        (
            again.usage.cache_read_tokens,
            again.usage.cache_write_tokens
        ),
        (kb_tokens, 0)
    );

    // Caches are model-scoped, and a changed prefix is a new entry.
    let sonnet5 = env
        .adapter
        .complete(&request("claude-sonnet-5", system.clone(), "Who pays?"))
        .await
        .unwrap();
    assert_eq!(sonnet5.usage.cache_write_tokens, kb_tokens);
    let edited = format!("{kb}One more article.\n");
    let changed = env
        .adapter
        .complete(&request(
            "claude-sonnet-5-5",
            vec![block(&edited, true)],
            "Who pays?",
        ))
        .await
        .unwrap();
    assert_eq!(changed.usage.cache_read_tokens, 0);
    assert_eq!(changed.usage.cache_write_tokens, tokens(&edited));

    // The raw usage splits the write by TTL.
    let (status, _, reply) = env
        .post(&json!({
            "model": "claude-sonnet-4-6",
            "max_tokens": 16,
            "system": [{"type": "text", "text": kb, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [{"role": "user", "content": "Hi"}]
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["usage"]["cache_creation_input_tokens"], kb_tokens);
    assert_eq!(
        reply["usage"]["cache_creation"],
        json!({"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": kb_tokens})
    );
}

#[tokio::test]
async fn cache_entries_expire_after_five_emulated_minutes() {
    // 3000 emulated seconds per real second: five minutes pass in 0.1 s.
    let env = start_with(EmulatorConfig {
        time_scale: 3000.0,
        token_secs: 0.0,
        ..EmulatorConfig::default()
    })
    .await;
    let (kb, kb_tokens) = knowledge_base(2_000);
    let req = request("claude-sonnet-4-6", vec![block(&kb, true)], "Hi");
    let first = env.adapter.complete(&req).await.unwrap();
    assert_eq!(first.usage.cache_write_tokens, kb_tokens);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let later = env.adapter.complete(&req).await.unwrap();
    assert_eq!(
        (
            later.usage.cache_read_tokens,
            later.usage.cache_write_tokens
        ),
        (0, kb_tokens)
    );
}

#[tokio::test]
async fn a_block_under_1024_tokens_is_not_cached() {
    let env = start().await;
    let (short, short_tokens) = knowledge_base(900);
    assert!(short_tokens < 1024, "{short_tokens}");
    let req = request("claude-sonnet-4-5", vec![block(&short, true)], "Hi");
    for _ in 0..2 {
        let r = env.adapter.complete(&req).await.unwrap();
        assert_eq!(
            (r.usage.cache_read_tokens, r.usage.cache_write_tokens),
            (0, 0)
        );
        assert_eq!(r.usage.input_tokens, short_tokens + tokens("Hi"));
    }
    // Just over the minimum caches.
    let (long, long_tokens) = knowledge_base(1100);
    assert!(long_tokens >= 1024);
    let r = env
        .adapter
        .complete(&request(
            "claude-sonnet-4-5",
            vec![block(&long, true)],
            "Hi",
        ))
        .await
        .unwrap();
    assert_eq!(r.usage.cache_write_tokens, long_tokens);
}

#[tokio::test]
async fn a_truncated_stream_ends_in_an_error() {
    let env = start().await;
    let req = request("claude-sonnet-4-6", Vec::new(), "Tell me about buckets.");
    // message_start, content_block_start, ping, then two deltas.
    env.emu.faults().inject(
        ROUTE,
        Fault::TruncateStream {
            after_chunks: 5,
            abort: false,
        },
        1,
    );
    let s = collect(&env.adapter, &req).await;
    assert_eq!(s.deltas.len(), 2, "{:?}", s.deltas);
    match s.end {
        Err(UpstreamError::Unavailable {
            status: None,
            message,
            ..
        }) => assert_eq!(message, "stream ended before message_stop"),
        other => panic!("{other:?}"),
    }
    // A cut past the end still never lets message_stop through.
    env.emu.faults().inject(
        ROUTE,
        Fault::TruncateStream {
            after_chunks: 10_000,
            abort: false,
        },
        1,
    );
    let s = collect(&env.adapter, &req).await;
    assert!(s.deltas.len() > 5);
    assert!(
        matches!(s.end, Err(UpstreamError::Unavailable { .. })),
        "{:?}",
        s.end
    );
    // A broken connection is an error too.
    env.emu.faults().inject(
        ROUTE,
        Fault::TruncateStream {
            after_chunks: 4,
            abort: true,
        },
        1,
    );
    let s = collect(&env.adapter, &req).await;
    // What was sent before the break may be lost with the connection.
    assert!(s.deltas.len() <= 1, "{:?}", s.deltas);
    assert!(
        matches!(s.end, Err(UpstreamError::Unavailable { status: None, .. })),
        "{:?}",
        s.end
    );
    // The fault is used up.
    assert!(collect(&env.adapter, &req).await.end.is_ok());
}

#[tokio::test]
async fn an_error_event_after_the_200_is_an_overload() {
    let env = start().await;
    let req = request("claude-sonnet-5", Vec::new(), "Hello");
    env.emu
        .faults()
        .inject(ROUTE, Fault::ErrorEvent { after_chunks: 4 }, 1);
    let s = collect(&env.adapter, &req).await;
    assert_eq!(s.deltas.len(), 1);
    match s.end {
        Err(UpstreamError::Unavailable {
            status: Some(529),
            message,
            ..
        }) => assert_eq!(message, "Overloaded"),
        other => panic!("{other:?}"),
    }
    // Its non-streaming twin is a 529.
    env.emu
        .faults()
        .inject(ROUTE, Fault::ErrorEvent { after_chunks: 0 }, 1);
    let e = env.adapter.complete(&req).await.unwrap_err();
    assert!(
        matches!(
            e,
            UpstreamError::Unavailable {
                status: Some(529),
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn an_unknown_model_is_not_found() {
    let env = start().await;
    let e = env
        .adapter
        .complete(&request("claude-sonnet-9", Vec::new(), "Hi"))
        .await
        .unwrap_err();
    match e {
        UpstreamError::NotFound { message, .. } => {
            assert!(
                message.starts_with("model: claude-sonnet-9 (request req_011C"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let e = env
        .adapter
        .stream(&request("gpt-4o", Vec::new(), "Hi"))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, UpstreamError::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn version_header_and_key_are_required() {
    let env = start().await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "Hi"}]});
    let (status, headers, text) = env.raw(&[("x-api-key", KEY)], &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let reply: Value = serde_json::from_str(&text).unwrap();
    let request_id = headers["request-id"].to_str().unwrap();
    assert!(request_id.starts_with("req_011C"), "{request_id}");
    assert_eq!(
        reply,
        json!({"type": "error",
               "error": {"type": "invalid_request_error", "message": "anthropic-version: header is required"},
               "request_id": request_id})
    );
    let (status, _, text) = env.raw(&[("anthropic-version", "2023-06-01")], &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let reply: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["error"]["type"], "authentication_error");
    // The official Python SDK (2.x) sends the key as a bearer token: accepted, but not
    // together with x-api-key.
    let bearer = [
        ("authorization", "Bearer sk-ant-test"),
        ("anthropic-version", "2023-06-01"),
    ];
    let (status, _, text) = env.raw(&bearer, &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let both = [
        ("authorization", "Bearer sk-ant-test"),
        ("x-api-key", KEY),
        ("anthropic-version", "2023-06-01"),
    ];
    let (status, _, _) = env.raw(&both, &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // With a configured key, another key is refused.
    let strict = start_with(EmulatorConfig {
        api_key: Some("sk-ant-other".to_owned()),
        ..EmulatorConfig::default()
    })
    .await;
    let e = strict
        .adapter
        .complete(&request("claude-sonnet-4-5", Vec::new(), "Hi"))
        .await
        .unwrap_err();
    match e {
        UpstreamError::Auth {
            status: 401,
            message,
            ..
        } => assert!(message.starts_with("invalid x-api-key"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn injected_rate_limits_and_overloads_use_anthropic_errors() {
    let env = start().await;
    let req = request("claude-sonnet-4-5", Vec::new(), "Hi");
    env.emu.faults().inject(
        ROUTE,
        Fault::RateLimit {
            retry_after_ms: 1500,
        },
        2,
    );
    let e = env.adapter.complete(&req).await.unwrap_err();
    assert!(
        matches!(e, UpstreamError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(2)),
        "{e:?}"
    );
    let (status, headers, reply) = env
        .post(&json!({"model": "claude-sonnet-4-5", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["x-should-retry"], "true");
    assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "0");
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["error"]["type"], "rate_limit_error");
    assert_eq!(reply["request_id"], headers["request-id"].to_str().unwrap());

    env.emu.faults().inject(ROUTE, Fault::Unavailable, 1);
    let e = env.adapter.stream(&req).await.err().unwrap();
    assert!(
        matches!(&e, UpstreamError::Unavailable { status: Some(529), message, .. } if message.starts_with("Overloaded")),
        "{e:?}"
    );
    env.emu.faults().inject(ROUTE, Fault::ServerError, 1);
    let e = env.adapter.complete(&req).await.unwrap_err();
    assert!(
        matches!(
            e,
            UpstreamError::Unavailable {
                status: Some(500),
                ..
            }
        ),
        "{e:?}"
    );
    env.emu.faults().upstream_down(Duration::from_secs(30));
    let e = env.adapter.complete(&req).await.unwrap_err();
    assert!(
        matches!(
            e,
            UpstreamError::Unavailable {
                status: Some(529),
                ..
            }
        ),
        "{e:?}"
    );
    env.emu.faults().clear();
    assert!(env.adapter.complete(&req).await.is_ok());
    assert_eq!(env.emu.stats().count(ROUTE), 6);
}

fn recorded_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/anthropic")
}

/// Object keys in the order they appear in `raw` JSON text.
fn keys_in_order(raw: &str, value: &Value) -> Vec<String> {
    let mut keys: Vec<(usize, String)> = value
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (raw.find(&format!("\"{k}\":")).unwrap(), k.clone()))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

fn key_set(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn the_message_object_has_the_recorded_shape() {
    let env = start().await;
    let file =
        std::fs::read_to_string(recorded_dir().join("recorded/py_nonstream_200_sonnet-4-5.json"))
            .unwrap();
    let recorded: Value = serde_json::from_str(&file).unwrap();
    let recorded = &recorded[0]["response"]["body"];
    // The recorded key order is in the file's text (parsed maps are sorted).
    let recorded_raw = &file[file.find("\"response\"").unwrap()..];
    let (status, headers, text) = env
        .raw(
            &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
            &json!({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                    "messages": [{"role": "user", "content": "Extract: 2 Green Tea"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers["request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_011C")
    );
    let ratelimit: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("anthropic-ratelimit-"))
        .collect();
    assert_eq!(ratelimit.len(), 12, "{ratelimit:?}");
    let reset = headers["anthropic-ratelimit-tokens-reset"]
        .to_str()
        .unwrap();
    assert!(reset.len() == 20 && reset.ends_with('Z'), "{reset}");
    assert!(headers.contains_key("anthropic-organization-id"));

    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        keys_in_order(&text, &got),
        keys_in_order(recorded_raw, recorded)
    );
    assert_eq!(key_set(&got["usage"]), key_set(&recorded["usage"]));
    assert_eq!(
        key_set(&got["usage"]["cache_creation"]),
        key_set(&recorded["usage"]["cache_creation"])
    );
    assert_eq!(
        key_set(&got["content"][0]),
        key_set(&recorded["content"][0])
    );
    assert_eq!(got["model"], recorded["model"]);
    assert_eq!(got["type"], "message");
    assert_eq!(got["role"], "assistant");
    assert_eq!(got["stop_reason"], "end_turn");
    assert_eq!(got["stop_sequence"], Value::Null);
    assert_eq!(got["usage"]["service_tier"], "standard");
    assert_eq!(got["usage"]["inference_geo"], "not_available");
    let id = got["id"].as_str().unwrap();
    assert!(id.starts_with("msg_01") && id.len() == recorded["id"].as_str().unwrap().len());
}

/// `(event name, data)` of each event of an SSE body.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = None;
            for line in e.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).unwrap_or_else(|err| panic!("{err}: {v}")));
                }
            }
            (name.expect("a named event"), data.expect("data"))
        })
        .collect()
}

/// Event names with each run of deltas written once.
fn sequence(events: &[(String, Value)]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (name, _) in events {
        if names.last() != Some(name) {
            names.push(name.clone());
        }
    }
    names
}

#[tokio::test]
async fn the_stream_has_the_recorded_event_sequence() {
    let env = start().await;
    let recorded_body =
        std::fs::read_to_string(recorded_dir().join("sse/recorded_sonnet-4-5_stream_body.sse"))
            .unwrap();
    let recorded = events(&recorded_body);
    let (status, headers, text) = env
        .raw(
            &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
            &json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": true,
                    "messages": [{"role": "user", "content": "Order 12345"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    let got = events(&text);
    assert_eq!(sequence(&got), sequence(&recorded));
    assert_eq!(
        sequence(&got),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &got {
        assert_eq!(data["type"], name.as_str());
    }
    // Same fields as the real events.
    let find =
        |evs: &[(String, Value)], n: &str| evs.iter().find(|(e, _)| e == n).unwrap().1.clone();
    let (start, rec_start) = (
        find(&got, "message_start"),
        find(&recorded, "message_start"),
    );
    assert_eq!(key_set(&start["message"]), key_set(&rec_start["message"]));
    assert_eq!(
        key_set(&start["message"]["usage"]),
        key_set(&rec_start["message"]["usage"])
    );
    assert_eq!(start["message"]["usage"]["output_tokens"], 1);
    let (delta, rec_delta) = (
        find(&got, "message_delta"),
        find(&recorded, "message_delta"),
    );
    assert_eq!(key_set(&delta["usage"]), key_set(&rec_delta["usage"]));
    assert_eq!(key_set(&delta["delta"]), key_set(&rec_delta["delta"]));
    // The padding real traffic has before the last brace.
    assert!(text.contains(" }\n\n"), "no padded event");
    assert!(text.contains("data: {\"type\": \"ping\"}\n\n"));
    let answer: String = got
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert!(answer.ends_with("You said: Order 12345"), "{answer}");
    assert_eq!(
        delta["usage"]["output_tokens"],
        got.iter()
            .filter(|(e, _)| e == "content_block_delta")
            .count()
    );
}

#[tokio::test]
async fn bodies_are_validated_like_the_api() {
    let env = start().await;
    let user = json!([{"role": "user", "content": "Hi"}]);
    env.invalid(
        json!({"model": "claude-sonnet-4-5", "messages": user}),
        "max_tokens: Field required",
    )
    .await;
    env.invalid(
        json!({"max_tokens": 8, "messages": user}),
        "model: Field required",
    )
    .await;
    env.invalid(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []}),
        "messages: at least one message is required",
    )
    .await;
    env.invalid(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 8,
               "messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Hi"}]}),
        "messages: first message must use the \"user\" role",
    )
    .await;
    env.invalid(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 8,
               "messages": [{"role": "system", "content": "Hi"}]}),
        "messages.0.role: Input should be 'user' or 'assistant'",
    )
    .await;
    env.invalid(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": user, "n": 2}),
        "n: Extra inputs are not permitted",
    )
    .await;
    env.invalid(
        json!({"model": "claude-sonnet-4-5", "max_tokens": -1, "messages": user}),
        "max_tokens: Input should be greater than or equal to 0",
    )
    .await;
    env.invalid(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 64_001, "messages": user}),
        "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for claude-sonnet-4-5-20250929",
    )
    .await;
    env.invalid(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": user,
               "temperature": 0.5, "top_p": 0.9}),
        "temperature and top_p cannot both be specified for this model. Please use only one.",
    )
    .await;
    env.invalid(
        json!({"model": "claude-sonnet-5", "max_tokens": 8, "messages": user, "temperature": 0.5}),
        "temperature is deprecated for this model",
    )
    .await;
    env.invalid(
        json!({"model": "claude-sonnet-5-5", "max_tokens": 8,
               "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure"}]}),
        "This model does not support assistant message prefill. The conversation must end with a user message.",
    )
    .await;
    env.invalid(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": user, "system": 5}),
        "system: Input should be a valid string or a list of text blocks",
    )
    .await;
    let cached = json!({"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}});
    env.invalid(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": user,
               "system": [cached, cached, cached, cached, cached]}),
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    )
    .await;
    env.invalid(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 0, "stream": true, "messages": user}),
        "max_tokens: 0 cannot be combined with stream: true",
    )
    .await;

    // Accepted: a string system prompt, consecutive user turns (merged by the API),
    // temperature on Sonnet 4.6, prefill on Sonnet 4.5.
    let (status, _, reply) = env
        .post(&json!({"model": "claude-sonnet-4-6", "max_tokens": 64, "system": "Be brief.",
                      "temperature": 0.3,
                      "messages": [{"role": "user", "content": "one"}, {"role": "user", "content": [{"type": "text", "text": "two"}]}]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(
        reply["content"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with("You said: two")
    );
    let (status, _, reply) = env
        .post(&json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
                      "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well"}]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    // max_tokens 0 warms the cache and generates nothing.
    let (status, _, reply) = env
        .post(&json!({"model": "claude-sonnet-4-5", "max_tokens": 0, "messages": user}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["content"], json!([]));
    assert_eq!(reply["stop_reason"], "max_tokens");
    assert_eq!(reply["usage"]["output_tokens"], 0);

    // Stop sequences and the token limit end the answer early.
    let (_, _, reply) = env
        .post(
            &json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": user,
                      "stop_sequences": ["emulated"]}),
        )
        .await;
    assert_eq!(reply["stop_reason"], "stop_sequence");
    assert_eq!(reply["stop_sequence"], "emulated");
    assert_eq!(
        reply["content"][0]["text"],
        "This is claude-sonnet-4-5-20250929, "
    );
    let (_, _, reply) = env
        .post(&json!({"model": "claude-sonnet-4-5", "max_tokens": 3, "messages": user}))
        .await;
    assert_eq!(reply["stop_reason"], "max_tokens");
    assert_eq!(reply["stop_sequence"], Value::Null);
    assert_eq!(reply["usage"]["output_tokens"], 3);

    // Not JSON.
    let response = env
        .http
        .post(format!("{}/v1/messages", env.emu.anthropic_base_url()))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn dropping_the_adapter_stream_abandons_the_emulated_one() {
    // 0.05 s between events: the stream is still running when it is dropped.
    let env = start_with(EmulatorConfig {
        token_secs: 0.05,
        ..EmulatorConfig::default()
    })
    .await;
    let mut stream = env
        .adapter
        .stream(&request(
            "claude-sonnet-4-5",
            Vec::new(),
            "A long question about buckets and files.",
        ))
        .await
        .unwrap();
    assert!(matches!(stream.next().await, Some(Ok(ChatChunk::Delta(_)))));
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.emu.stats().abandoned_streams == 0 {
        assert!(Instant::now() < deadline, "the emulator kept streaming");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
