//! The Anthropic adapter against Anthropic's own traffic: every file of
//! `reference/anthropic` (recorded exchanges and the SDKs' SSE fixtures) is replayed
//! through a local HTTP server into the real adapter, and what the adapter sends is checked
//! against the API's shape (headers, system blocks with `cache_control`, `max_tokens`).

use crate::common::anthropic::{Streamed, collect};

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use finetune_core::ports::RetryPolicy;
use finetune_core::ports::UpstreamError;
use finetune_core::ports::chat::{
    Chat, ChatChunk, ChatMessage, ChatRequest, ChatResponse, ChatRole, ChatUsage, FinishReason,
    SystemBlock,
};
use finetune_providers::anthropic::{API_VERSION, Anthropic, AnthropicConfig};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-ant-test";

fn reference() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/anthropic")
}

fn read(rel: &str) -> Vec<u8> {
    let p = reference().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_json(rel: &str) -> Value {
    serde_json::from_slice(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn adapter_for(base_url: &str) -> Anthropic {
    let mut config = AnthropicConfig::new(KEY, base_url);
    config.timeout = Duration::from_secs(20);
    // One exchange per call: these tests check how each response is classified (the
    // retries have their own tests, tests/faults.rs).
    config.retry = RetryPolicy::none();
    Anthropic::new(config).unwrap()
}

fn adapter(server: &MockServer) -> Anthropic {
    adapter_for(&server.uri())
}

/// A Pro-tier request: a cached knowledge-base block, then an uncached instruction.
fn pro_request(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        system: vec![
            SystemBlock {
                text: "KNOWLEDGE BASE: File Engine stores files.".to_owned(),
                cache: true,
            },
            SystemBlock {
                text: "Answer briefly.".to_owned(),
                cache: false,
            },
        ],
        messages: vec![ChatMessage {
            role: ChatRole::User,
            content: "Hello".to_owned(),
        }],
        temperature: Some(0.2),
        max_tokens: 1024,
        stop: vec!["###".to_owned()],
        user: Some("u-0f3a".to_owned()),
        deadline: None,
    }
}

/// Headers a replay must not copy: computed by the server or hop-by-hop.
fn replayable(name: &str) -> bool {
    !matches!(
        name.to_ascii_lowercase().as_str(),
        "content-length" | "content-type" | "connection" | "transfer-encoding"
    )
}

/// A response as recorded: status, headers, JSON body or SSE text.
fn template(status: u16, headers: &Value, body: &Value) -> ResponseTemplate {
    let mut t = match body {
        Value::String(sse) => {
            ResponseTemplate::new(status).set_body_raw(sse.as_bytes().to_vec(), "text/event-stream")
        }
        other => ResponseTemplate::new(status)
            .set_body_raw(serde_json::to_vec(other).unwrap(), "application/json"),
    };
    if let Some(headers) = headers.as_object() {
        for (name, value) in headers {
            if replayable(name) {
                t = t.insert_header(name.as_str(), value.as_str().unwrap());
            }
        }
    }
    t
}

/// A server answering `POST /v1/messages` with `templates` in order, one each.
async fn replay(templates: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    for t in templates {
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(t)
            .up_to_n_times(1)
            .mount(&server)
            .await;
    }
    server
}

async fn sse_server(body: Vec<u8>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    server
}

async fn stream_file(rel: &str) -> Streamed {
    let server = sse_server(read(rel)).await;
    collect(&adapter(&server), &pro_request("claude-sonnet-4-5")).await
}

fn usage(input: u64, output: u64, read: u64, write: u64) -> ChatUsage {
    ChatUsage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: read,
        cache_write_tokens: write,
    }
}

/// What a recorded `Message` should decode to, worked out from its JSON alone.
fn expected(message: &Value) -> (String, String, ChatUsage) {
    let text: String = message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "text")
        .map(|b| b["text"].as_str().unwrap())
        .collect();
    let u = &message["usage"];
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let usage = usage(
        n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens"),
        n("output_tokens"),
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
    );
    (
        text,
        message["stop_reason"].as_str().unwrap().to_owned(),
        usage,
    )
}

/// Decodes one recorded 200 `Message` through the adapter and checks it.
async fn check_message(status: u16, headers: &Value, body: &Value) -> ChatResponse {
    assert_eq!(status, 200);
    let server = replay(vec![template(status, headers, body)]).await;
    let got = adapter(&server)
        .complete(&pro_request("claude-sonnet-4-5"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (text, stop, usage) = expected(body);
    assert_eq!(got.text, text);
    assert_eq!(got.raw_finish_reason, stop);
    assert_eq!(got.usage, usage);
    assert_eq!(got.id, body["id"].as_str().unwrap());
    assert_eq!(got.model, body["model"].as_str().unwrap());
    got
}

/// Counts what the replay covered, so the test cannot pass on nothing.
#[derive(Default)]
struct Coverage {
    files: BTreeSet<String>,
    exchanges: usize,
    streams: usize,
}

#[tokio::test]
async fn every_reference_file_decodes_through_the_adapter() {
    let mut files: Vec<String> = Vec::new();
    for dir in ["recorded", "sse"] {
        for entry in std::fs::read_dir(reference().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            files.push(format!("{dir}/{name}"));
        }
    }
    files.sort();
    let mut cov = Coverage::default();
    for file in &files {
        match file.as_str() {
            "recorded/py_nonstream_200_sonnet-4-5.json" => py_nonstream(file, &mut cov).await,
            "recorded/py_stream_429x2_then_200_sonnet-4-5.json" => {
                py_stream_429s(file, &mut cov).await
            }
            "recorded/py_toolrunner_ratelimit_headers_opus-4-5.json" => {
                py_toolrunner(file, &mut cov).await
            }
            "recorded/ts_toolrunner_nock_request_id_headers.json" => {
                ts_toolrunner(file, &mut cov).await
            }
            "sse/basic_text.sse" => {
                let s = stream_file(file).await;
                assert_eq!(s.deltas, ["Hello", " there", "!"]);
                let done = s.end.unwrap();
                assert_eq!(done.text, "Hello there!");
                assert_eq!(done.id, "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK");
                assert_eq!(done.model, "claude-3-opus-latest");
                assert_eq!(done.raw_finish_reason, "end_turn");
                // message_start's input count survives a message_delta without it.
                assert_eq!(done.usage, usage(11, 6, 0, 0));
                cov.streams += 1;
            }
            "sse/error_event_overloaded.sse" => {
                let s = stream_file(file).await;
                assert!(s.deltas.is_empty());
                match s.end {
                    Err(UpstreamError::Unavailable {
                        status: Some(529),
                        message,
                        ..
                    }) => assert_eq!(message, "Overloaded"),
                    other => panic!("expected Unavailable(529), got {other:?}"),
                }
                cov.streams += 1;
            }
            "sse/recorded_sonnet-4-5_stream_body.sse" => {
                let s = stream_file(file).await;
                assert_eq!(s.deltas, ["[", "12", "345,", "67890]"]);
                let done = s.end.unwrap();
                assert_eq!(done.text, "[12345,67890]");
                assert_eq!(done.id, "msg_013nnniYDrJDocdy5nrMU7cH");
                assert_eq!(done.model, "claude-sonnet-4-5-20250929");
                assert_eq!(done.raw_finish_reason, "end_turn");
                assert_eq!(done.usage, usage(135, 10, 0, 0));
                cov.streams += 1;
            }
            "sse/refusal_stop_details.sse" => {
                let s = stream_file(file).await;
                assert!(s.deltas.is_empty(), "{:?}", s.deltas);
                let done = s.end.unwrap();
                assert_eq!(
                    (done.text.as_str(), done.raw_finish_reason.as_str()),
                    ("", "refusal")
                );
                assert_eq!(done.usage, usage(20, 0, 0, 0));
                cov.streams += 1;
            }
            "sse/thinking_text_refusal_full_usage.sse" => {
                let s = stream_file(file).await;
                // The thinking block (thinking_delta, signature_delta) yields no text.
                assert_eq!(s.deltas, ["Hi"]);
                let done = s.end.unwrap();
                assert_eq!(done.text, "Hi");
                assert_eq!(done.model, "claude-fable-5");
                assert_eq!(done.raw_finish_reason, "refusal");
                assert_eq!(done.finish_reason, FinishReason::ContentFilter);
                assert_eq!(done.usage, usage(28, 106, 0, 0));
                cov.streams += 1;
            }
            "sse/tool_use.sse" => {
                let s = stream_file(file).await;
                // input_json_delta fragments of the tool_use block are not text.
                assert_eq!(
                    s.deltas,
                    ["I", "'ll check the current weather in Paris for you."]
                );
                let done = s.end.unwrap();
                assert_eq!(done.raw_finish_reason, "tool_use");
                assert_eq!(done.finish_reason, FinishReason::Other);
                assert_eq!(done.usage, usage(377, 65, 0, 0));
                cov.streams += 1;
            }
            other => panic!("no check for reference file {other}: add one"),
        }
        cov.files.insert(file.clone());
    }
    assert_eq!(cov.files.len(), 10, "files covered: {:?}", cov.files);
    assert_eq!(cov.files.len(), files.len());
    assert_eq!(
        cov.streams,
        6 + 1,
        "six SSE fixtures plus the recorded stream"
    );
    assert_eq!(
        cov.exchanges,
        1 + 3 + 2 + 10,
        "recorded HTTP exchanges replayed"
    );
}

async fn py_nonstream(file: &str, cov: &mut Coverage) {
    let exchanges = read_json(file);
    let [exchange] = exchanges.as_array().unwrap().as_slice() else {
        panic!("one exchange expected")
    };
    let response = &exchange["response"];
    let server = replay(vec![template(200, &response["headers"], &response["body"])]).await;
    let got = adapter(&server)
        .complete(&pro_request("claude-sonnet-4-5"))
        .await
        .unwrap();
    assert_eq!(
        got.text,
        r#"{"product_name": "Green Tea", "price": 5.50, "quantity": 2}"#
    );
    assert_eq!(got.model, "claude-sonnet-4-5-20250929");
    assert_eq!(got.raw_finish_reason, "end_turn");
    assert_eq!(got.usage, usage(249, 26, 0, 0));
    // We send the headers the official SDK sent in the recording.
    let sent = &server.received_requests().await.unwrap()[0];
    for name in ["anthropic-version", "content-type"] {
        assert_eq!(
            sent.headers.get(name).unwrap().to_str().unwrap(),
            exchange["request"]["headers"][name].as_str().unwrap(),
            "{name}"
        );
    }
    cov.exchanges += 1;
}

async fn py_stream_429s(file: &str, cov: &mut Coverage) {
    let exchanges = read_json(file);
    let exchanges = exchanges.as_array().unwrap();
    assert_eq!(exchanges.len(), 3);
    let templates = exchanges
        .iter()
        .map(|e| {
            let r = &e["response"];
            template(
                r["status_code"].as_u64().unwrap() as u16,
                &r["headers"],
                &r["body"],
            )
        })
        .collect();
    let server = replay(templates).await;
    let adapter = adapter(&server);
    let request = pro_request("claude-sonnet-4-5");
    // A retrying caller: two rate limits, then the stream.
    for (i, exchange) in exchanges[..2].iter().enumerate() {
        match adapter.stream(&request).await {
            Err(UpstreamError::RateLimited {
                message,
                retry_after,
                ..
            }) => {
                assert!(
                    message.contains("rate limit of 20,000,000 prompt bytes per hour"),
                    "{message}"
                );
                let id = exchange["response"]["body"]["request_id"].as_str().unwrap();
                assert!(message.ends_with(&format!("(request {id})")), "{message}");
                // The recorder kept no retry-after header.
                assert_eq!(retry_after, None);
            }
            Err(other) => panic!("attempt {i}: expected RateLimited, got {other:?}"),
            Ok(_) => panic!("attempt {i}: expected RateLimited, got a stream"),
        }
        cov.exchanges += 1;
    }
    let s = collect(&adapter, &request).await;
    assert_eq!(s.end.unwrap().text, "[12345,67890]");
    cov.exchanges += 1;
    cov.streams += 1;
    // Every attempt sent the same body, as the SDK's retries did.
    let sent = server.received_requests().await.unwrap();
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|r| r.body == sent[0].body));
}

async fn py_toolrunner(file: &str, cov: &mut Coverage) {
    let exchanges = read_json(file);
    let exchanges = exchanges.as_array().unwrap();
    assert_eq!(exchanges.len(), 2);
    let mut got = Vec::new();
    for e in exchanges {
        let r = &e["response"];
        got.push(
            check_message(
                r["status_code"].as_u64().unwrap() as u16,
                &r["headers"],
                &r["body"],
            )
            .await,
        );
        cov.exchanges += 1;
    }
    // server_tool_use and tool_use blocks carry no text.
    assert_eq!(
        got[0].text,
        "I'll check the weather for all three cities in Celsius simultaneously."
    );
    assert_eq!(got[0].usage, usage(3182, 237, 0, 0));
    assert_eq!(
        (got[1].text.as_str(), got[1].raw_finish_reason.as_str()),
        ("", "tool_use")
    );
    assert_eq!(got[1].usage, usage(0, 0, 0, 0));
}

async fn ts_toolrunner(file: &str, cov: &mut Coverage) {
    let exchanges = read_json(file);
    let exchanges = exchanges.as_array().unwrap();
    assert_eq!(exchanges.len(), 10);
    let mut first = None;
    for e in exchanges {
        let got = check_message(
            e["status"].as_u64().unwrap() as u16,
            &e["rawHeaders"],
            &e["response"],
        )
        .await;
        first.get_or_insert(got);
        cov.exchanges += 1;
    }
    let first = first.unwrap();
    assert_eq!(
        first.text,
        "I'll use the test_tool with the value \"test\" as requested, then provide a final response."
    );
    assert_eq!(first.raw_finish_reason, "tool_use");
    assert_eq!(first.usage, usage(415, 76, 0, 0));
}

#[tokio::test]
async fn cache_counts_are_normalised_into_the_prompt_total() {
    // Derived from the recorded response: the same body with cache counters set.
    let mut body =
        read_json("recorded/py_nonstream_200_sonnet-4-5.json")[0]["response"]["body"].clone();
    body["usage"]["cache_creation_input_tokens"] = json!(18000);
    body["usage"]["cache_creation"]["ephemeral_5m_input_tokens"] = json!(18000);
    let write = check_message(200, &json!({}), &body).await;
    assert_eq!(write.usage, usage(249 + 18000, 26, 0, 18000));

    body["usage"]["cache_creation_input_tokens"] = json!(0);
    body["usage"]["cache_read_input_tokens"] = json!(18000);
    let cached = check_message(200, &json!({}), &body).await;
    assert_eq!(cached.usage, usage(249 + 18000, 26, 18000, 0));

    // Nulls count as zero.
    body["usage"]["cache_read_input_tokens"] = Value::Null;
    let null = check_message(200, &json!({}), &body).await;
    assert_eq!(null.usage, usage(249, 26, 0, 0));

    // A stream: message_delta's cumulative counts replace message_start's.
    let sse = String::from_utf8(read("sse/recorded_sonnet-4-5_stream_body.sse")).unwrap();
    let sse = sse.replace(
        r#""cache_read_input_tokens":0"#,
        r#""cache_read_input_tokens":18000"#,
    );
    let s = collect(
        &adapter(&sse_server(sse.into_bytes()).await),
        &pro_request("claude-sonnet-4-5"),
    )
    .await;
    assert_eq!(s.end.unwrap().usage, usage(135 + 18000, 10, 18000, 0));

    // A message_delta that omits the cache counters keeps message_start's.
    let sse = String::from_utf8(read("sse/basic_text.sse"))
        .unwrap()
        .replace(
            r#""usage":{"input_tokens":11,"output_tokens":1}"#,
            r#""usage":{"input_tokens":11,"cache_creation_input_tokens":4000,"output_tokens":1}"#,
        );
    let s = collect(
        &adapter(&sse_server(sse.into_bytes()).await),
        &pro_request("claude-sonnet-4-5"),
    )
    .await;
    assert_eq!(s.end.unwrap().usage, usage(4011, 6, 0, 4000));
}

#[tokio::test]
async fn requests_carry_the_api_headers_and_body_shape() {
    let server = MockServer::start().await;
    let body =
        read_json("recorded/py_nonstream_200_sonnet-4-5.json")[0]["response"]["body"].clone();
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", KEY))
        .and(header("anthropic-version", API_VERSION))
        .and(header("content-type", "application/json"))
        .respond_with(template(200, &json!({}), &body))
        .mount(&server)
        .await;
    let stream_body = read("sse/basic_text.sse");
    let adapter = adapter(&server);
    let request = pro_request("claude-sonnet-4-5");
    adapter.complete(&request).await.unwrap();
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", KEY))
        .and(header("anthropic-version", API_VERSION))
        .respond_with(ResponseTemplate::new(200).set_body_raw(stream_body, "text/event-stream"))
        .mount(&server)
        .await;
    let s = collect(&adapter, &request).await;
    assert_eq!(s.end.unwrap().text, "Hello there!");
    let sent = server.received_requests().await.unwrap();
    assert_eq!(sent.len(), 1);
    let streamed: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert!(sent[0].headers.get("authorization").is_none());

    let expected = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "KNOWLEDGE BASE: File Engine stores files.",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Answer briefly."}
        ],
        "messages": [{"role": "user", "content": "Hello"}],
        "temperature": 0.2,
        "stop_sequences": ["###"],
        "metadata": {"user_id": "u-0f3a"},
        "stream": true
    });
    assert_eq!(streamed, expected);
}

#[tokio::test]
async fn the_plain_body_has_no_stream_flag_and_merges_turns() {
    let server = MockServer::start().await;
    let body =
        read_json("recorded/py_nonstream_200_sonnet-4-5.json")[0]["response"]["body"].clone();
    Mock::given(method("POST"))
        .and(path("/proxy/v1/messages"))
        .respond_with(template(200, &json!({}), &body))
        .mount(&server)
        .await;
    // A base URL with a path prefix (a proxy) keeps it.
    let adapter = adapter_for(&format!("{}/proxy/", server.uri()));
    let mut request = pro_request("claude-sonnet-5-5");
    request.system.clear();
    request.user = None;
    request.stop.clear();
    request.messages = vec![
        ChatMessage {
            role: ChatRole::User,
            content: "one".to_owned(),
        },
        ChatMessage {
            role: ChatRole::User,
            content: "two".to_owned(),
        },
        ChatMessage {
            role: ChatRole::Assistant,
            content: "ok".to_owned(),
        },
        ChatMessage {
            role: ChatRole::User,
            content: "three".to_owned(),
        },
    ];
    adapter.complete(&request).await.unwrap();
    let sent = server.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    // Sonnet 5.x rejects sampling parameters: temperature is not sent.
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-5-5",
            "max_tokens": 1024,
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "three"}
            ]
        })
    );
}

async fn error_from(status: u16, headers: &[(&str, &str)], body: Value) -> UpstreamError {
    let mut t = template(status, &json!({}), &body);
    for (k, v) in headers {
        t = t.insert_header(*k, *v);
    }
    let server = replay(vec![t]).await;
    adapter(&server)
        .complete(&pro_request("claude-sonnet-4-5"))
        .await
        .expect_err("an error status")
}

fn envelope(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CTEST"})
}

#[tokio::test]
async fn error_statuses_are_classified() {
    let e = error_from(
        400,
        &[],
        envelope("invalid_request_error", "max_tokens: Field required"),
    )
    .await;
    assert!(
        matches!(&e, UpstreamError::Rejected { status: 400, code: Some(c), message, .. }
            if c == "invalid_request_error" && message == "max_tokens: Field required (request req_011CTEST)"),
        "{e:?}"
    );
    let e = error_from(413, &[], envelope("request_too_large", "too large")).await;
    assert!(
        matches!(&e, UpstreamError::Rejected { status: 413, code: Some(c), .. } if c == "request_too_large"),
        "{e:?}"
    );
    // The key echoed in a message is redacted, ours and any other Anthropic-shaped key.
    let e = error_from(
        401,
        &[],
        envelope(
            "authentication_error",
            &format!("invalid x-api-key {KEY} sk-ant-api03-abcdef"),
        ),
    )
    .await;
    match &e {
        UpstreamError::Auth {
            status: 401,
            message,
            ..
        } => {
            assert!(
                !message.contains(KEY) && !message.contains("abcdef"),
                "{message}"
            );
            assert!(
                message.starts_with("invalid x-api-key <redacted>"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{e}").contains(KEY));
    let e = error_from(403, &[], envelope("permission_error", "no")).await;
    assert!(
        matches!(e, UpstreamError::Auth { status: 403, .. }),
        "{e:?}"
    );
    let e = error_from(
        404,
        &[],
        envelope("not_found_error", "model: claude-3-5-haiku-20241022"),
    )
    .await;
    assert!(matches!(e, UpstreamError::NotFound { .. }), "{e:?}");
    // A 429 with retry-after (the recording kept none, so it is added here).
    let e = error_from(
        429,
        &[("retry-after", "2"), ("x-should-retry", "true")],
        envelope("rate_limit_error", "slow down"),
    )
    .await;
    assert!(
        matches!(e, UpstreamError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(2)),
        "{e:?}"
    );
    let e = error_from(500, &[], envelope("api_error", "Internal server error")).await;
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
    let e = error_from(529, &[], envelope("overloaded_error", "Overloaded")).await;
    assert!(
        matches!(&e, UpstreamError::Unavailable { status: Some(529), message, .. } if message.starts_with("Overloaded")),
        "{e:?}"
    );
    assert!(e.is_retryable());
    // A proxy's HTML page: described, never quoted.
    let server = replay(vec![
        ResponseTemplate::new(502).set_body_raw("<html>bad gateway</html>", "text/html"),
    ])
    .await;
    let e = adapter(&server)
        .complete(&pro_request("claude-sonnet-4-5"))
        .await
        .unwrap_err();
    match e {
        UpstreamError::Unavailable {
            status: Some(502),
            message,
            ..
        } => {
            assert_eq!(
                message,
                "HTTP 502 without an Anthropic error body (text/html, 24 bytes)"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn broken_streams_end_in_an_error() {
    // The recorded stream without its message_stop.
    let sse = String::from_utf8(read("sse/recorded_sonnet-4-5_stream_body.sse")).unwrap();
    let cut = sse.find("event: message_stop").unwrap();
    let s = collect(
        &adapter(&sse_server(sse.as_bytes()[..cut].to_vec()).await),
        &pro_request("claude-sonnet-4-5"),
    )
    .await;
    assert_eq!(s.deltas.concat(), "[12345,67890]");
    match s.end {
        Err(UpstreamError::Unavailable {
            status: None,
            message,
            ..
        }) => assert_eq!(message, "stream ended before message_stop"),
        other => panic!("{other:?}"),
    }
    // Data that is not JSON.
    let s = collect(
        &adapter(&sse_server(b"event: message_start\ndata: {not json\n\n".to_vec()).await),
        &pro_request("claude-sonnet-4-5"),
    )
    .await;
    assert!(
        matches!(s.end, Err(UpstreamError::Protocol { .. })),
        "{:?}",
        s.end
    );
    // A 200 that is not an event stream.
    let body =
        read_json("recorded/py_nonstream_200_sonnet-4-5.json")[0]["response"]["body"].clone();
    let server = replay(vec![template(200, &json!({}), &body)]).await;
    let e = adapter(&server)
        .stream(&pro_request("claude-sonnet-4-5"))
        .await
        .err()
        .expect("a JSON body is not a stream");
    assert!(matches!(e, UpstreamError::Protocol { .. }), "{e:?}");
}

/// Reads one HTTP request's head from `socket`.
async fn read_head(socket: &mut tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client closed before sending a request");
        head.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        read_head(&mut socket).await;
        let events = String::from_utf8(read("sse/basic_text.sse")).unwrap();
        let first = &events[..events.find("event: content_block_delta").unwrap()];
        let first = format!(
            "{first}event: content_block_delta\ndata: {}\n\n",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#
        );
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let chunk = format!("{:x}\r\n{first}\r\n", first.len());
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(chunk.as_bytes()).await.unwrap();
        // Never finish the body: only the client going away ends this connection.
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    });
    let adapter = adapter_for(&format!("http://{addr}"));
    let mut stream = adapter
        .stream(&pro_request("claude-sonnet-4-5"))
        .await
        .unwrap();
    match stream.next().await {
        Some(Ok(ChatChunk::Delta(d))) => assert_eq!(d, "Hello"),
        other => panic!("{other:?}"),
    }
    drop(stream);
    assert!(
        server.await.unwrap(),
        "the connection stayed open after the stream was dropped"
    );
}

#[test]
fn the_adapter_never_shows_the_key_and_refuses_bad_settings() {
    let config = AnthropicConfig::new(KEY, "http://127.0.0.1:9/");
    assert!(!format!("{config:?}").contains(KEY));
    let adapter = Anthropic::new(config).unwrap();
    assert!(!format!("{adapter:?}").contains(KEY));
    assert_eq!(adapter.provider(), "anthropic");
    assert!(Anthropic::new(AnthropicConfig::new("", "https://api.anthropic.com")).is_err());
    let bad = Anthropic::new(AnthropicConfig::new(KEY, "ftp://example")).unwrap_err();
    assert!(!bad.to_string().contains(KEY));
}
