//! The OpenAI adapter behind the completion port (`Chat`):
//!
//! * against the project's emulator: plain and streamed answers agree, limits and stop
//!   sequences reach the model, truncated streams are errors, 404, 429 and 401 classify;
//! * against OpenAI's recorded chat traffic (`reference/recorded/openai-dotnet/
//!   ChatTests`), replayed byte for byte, also split at arbitrary byte boundaries;
//! * against the spec: every request body validates against `CreateChatCompletionRequest`;
//! * in-stream errors, non-SSE answers and dropped streams.

use crate::common;

use std::time::Duration;

use common::spec::violations;
use finetune_core::ports::chat::{
    Chat, ChatChunk, ChatMessage, ChatRequest, ChatResponse, ChatRole, ChatStream, FinishReason,
    SystemBlock,
};
use finetune_core::ports::{RetryPolicy, UpstreamError};
use finetune_emulator::{Emulator, EmulatorConfig, Fault};
use finetune_providers::OpenAiConfig;
use finetune_providers::openai::OpenAi;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-test-chat-3e5d7f9a1b2c4d6e";
const ROUTE: &str = "POST /v1/chat/completions";
const MODEL: &str = "gpt-4o-mini";
/// How the emulator names the model that answered.
const SNAPSHOT: &str = "gpt-4o-mini-2024-07-18";

/// One exchange per call: these tests check how each response is classified (the
/// retries have their own tests, tests/faults.rs).
fn adapter_at(base_url: String, key: &str) -> OpenAi {
    OpenAi::new(OpenAiConfig {
        retry: RetryPolicy::none(),
        ..OpenAiConfig::new(key, base_url)
    })
    .expect("adapter")
}

async fn emulator() -> Emulator {
    common::emulator_with(EmulatorConfig {
        api_key: Some(KEY.to_owned()),
        token_secs: 0.001,
        ..EmulatorConfig::default()
    })
    .await
}

fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: ChatRole::User,
        content: text.to_owned(),
    }
}

fn request(model: &str, question: &str) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        system: vec![
            SystemBlock {
                text: "You answer questions about pizza.".into(),
                cache: true,
            },
            SystemBlock {
                text: "Be brief.".into(),
                cache: false,
            },
        ],
        messages: vec![
            user("Hi"),
            ChatMessage {
                role: ChatRole::Assistant,
                content: "Hello! Ask me about pizza.".into(),
            },
            user(question),
        ],
        temperature: Some(0.7),
        max_tokens: 256,
        stop: Vec::new(),
        user: Some("user-1234".into()),
        deadline: None,
    }
}

fn minimal(model: &str, question: &str) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        system: Vec::new(),
        messages: vec![user(question)],
        temperature: None,
        max_tokens: 64,
        stop: Vec::new(),
        user: None,
        deadline: None,
    }
}

/// A stream drained: its deltas, then how it ended (`Done` or an error). Checks the
/// port's promise that nothing follows either.
async fn drain(mut stream: ChatStream) -> (Vec<String>, Result<ChatResponse, UpstreamError>) {
    let mut deltas = Vec::new();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the stream stalled")
        {
            Some(Ok(ChatChunk::Delta(text))) => {
                assert!(!text.is_empty(), "empty deltas are skipped");
                deltas.push(text);
            }
            Some(Ok(ChatChunk::Done(response))) => break Ok(response),
            Some(Err(e)) => break Err(e),
            None => panic!("the stream ended without Done or an error"),
        }
    };
    assert!(stream.next().await.is_none(), "an item after the end");
    (deltas, end)
}

async fn stream_of(api: &OpenAi, request: &ChatRequest) -> (Vec<String>, ChatResponse) {
    let (deltas, end) = drain(api.stream(request).await.expect("stream")).await;
    (deltas, end.expect("Done"))
}

fn text_of(e: &UpstreamError) -> String {
    format!("{e} {e:?}")
}

fn assert_cut_short(e: &UpstreamError) {
    assert!(
        matches!(e, UpstreamError::Unavailable { status: None, message, .. }
            if message.contains("stream ended before [DONE]")),
        "{e:?}"
    );
    assert!(e.is_retryable());
}

// ---------------------------------------------------------------------------------------
// Against the emulator
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn plain_and_streamed_answers_agree() {
    let emu = emulator().await;
    let api = adapter_at(emu.base_url(), KEY);
    assert_eq!(api.provider(), "openai");
    let req = request(MODEL, "Which topping goes with basil?");

    let plain = api.complete(&req).await.expect("complete");
    assert!(plain.id.starts_with("chatcmpl-"), "{plain:?}");
    assert_eq!(plain.model, SNAPSHOT);
    assert_eq!(plain.raw_finish_reason, "stop");
    assert!(
        plain
            .text
            .ends_with("You said: Which topping goes with basil?"),
        "{plain:?}"
    );
    assert!(plain.usage.input_tokens > 20, "{plain:?}");
    assert!(plain.usage.output_tokens > 5, "{plain:?}");
    assert_eq!(
        (
            plain.usage.cache_read_tokens,
            plain.usage.cache_write_tokens
        ),
        (0, 0)
    );

    let (deltas, streamed) = stream_of(&api, &req).await;
    assert!(deltas.len() > 5, "one delta per token: {deltas:?}");
    assert_eq!(deltas.concat(), plain.text);
    assert_eq!(streamed.text, plain.text);
    assert_eq!(streamed.usage, plain.usage, "the usage chunk arrived");
    assert_eq!(streamed.raw_finish_reason, "stop");
    assert_eq!(streamed.model, SNAPSHOT);
    assert!(streamed.id.starts_with("chatcmpl-"));
    assert_eq!(emu.stats().count(ROUTE), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn token_limit_and_stop_sequences_reach_the_model() {
    let emu = emulator().await;
    let api = adapter_at(emu.base_url(), KEY);

    let mut limited = minimal(MODEL, "Tell me everything about pizza.");
    limited.max_tokens = 3;
    let plain = api.complete(&limited).await.unwrap();
    assert_eq!(plain.raw_finish_reason, "length");
    assert_eq!(plain.finish_reason, FinishReason::Length);
    assert_eq!(plain.usage.output_tokens, 3);
    let (deltas, streamed) = stream_of(&api, &limited).await;
    assert_eq!(deltas.len(), 3);
    assert_eq!(streamed.raw_finish_reason, "length");
    assert_eq!(streamed.finish_reason, FinishReason::Length);
    assert_eq!(streamed.usage.output_tokens, 3);
    assert_eq!(streamed.text, plain.text);

    let mut stopped = minimal(MODEL, "Tell me everything about pizza.");
    stopped.stop = vec!["emulated".into(), "never there".into()];
    let plain = api.complete(&stopped).await.unwrap();
    assert_eq!(plain.text, format!("This is {SNAPSHOT}, "));
    let (_, streamed) = stream_of(&api, &stopped).await;
    assert_eq!(streamed.text, plain.text);
    emu.shutdown().await;
}

#[tokio::test]
async fn truncated_streams_are_errors_never_short_answers() {
    let emu = emulator().await;
    let api = adapter_at(emu.base_url(), KEY);
    let req = minimal(MODEL, "Margherita or marinara?");
    let (full, _) = stream_of(&api, &req).await;
    // Events: the role chunk, one per token, the finish chunk, the usage chunk, [DONE].
    let events = full.len() as u32 + 4;

    for after_chunks in [0, 1, 4, events - 2, events - 1] {
        for abort in [false, true] {
            emu.faults().inject(
                ROUTE,
                Fault::TruncateStream {
                    after_chunks,
                    abort,
                },
                1,
            );
            let (deltas, end) = drain(api.stream(&req).await.expect("the stream starts")).await;
            let e = end.expect_err("a truncated stream must not end in Done");
            assert_cut_short(&e);
            let expected = after_chunks.saturating_sub(1).min(full.len() as u32) as usize;
            if abort {
                // A broken connection may take the last chunks sent with it.
                assert!(
                    deltas.len() <= expected && full.starts_with(&deltas),
                    "after {after_chunks} chunks (abort): {deltas:?}"
                );
            } else {
                assert_eq!(deltas, full[..expected], "after {after_chunks} chunks");
            }
        }
    }
    assert!(emu.faults().pending().is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn an_unknown_model_is_not_found() {
    let emu = emulator().await;
    let api = adapter_at(emu.base_url(), KEY);
    let req = minimal("gpt-nonexistent", "Hello?");
    let e = api.complete(&req).await.expect_err("unknown model");
    assert!(matches!(e, UpstreamError::NotFound { .. }), "{e:?}");
    assert!(text_of(&e).contains("gpt-nonexistent"), "{e:?}");
    assert!(!e.is_retryable());
    let e = api.stream(&req).await.err().expect("unknown model");
    assert!(matches!(e, UpstreamError::NotFound { .. }), "{e:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_rate_limit_carries_its_retry_after() {
    let emu = emulator().await;
    let api = adapter_at(emu.base_url(), KEY);
    let req = minimal(MODEL, "Hello?");
    emu.faults().inject(
        ROUTE,
        Fault::RateLimit {
            retry_after_ms: 1500,
        },
        2,
    );
    let e = api.complete(&req).await.expect_err("429");
    assert!(
        matches!(&e, UpstreamError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_millis(1500)),
        "{e:?}"
    );
    assert!(e.is_retryable());
    let e = api.stream(&req).await.err().expect("429");
    assert!(
        matches!(&e, UpstreamError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_millis(1500)),
        "{e:?}"
    );
    // The fault is used up: the next call answers.
    api.complete(&req).await.expect("answers after the 429s");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_is_an_auth_error_that_never_shows_the_key() {
    let emu = emulator().await;
    let wrong = "sk-test-wrong-0123456789abcdefghij";
    let api = adapter_at(emu.base_url(), wrong);
    let req = minimal(MODEL, "Hello?");
    let plain = api.complete(&req).await.expect_err("401");
    let streamed = api.stream(&req).await.err().expect("401");
    for e in [plain, streamed] {
        assert!(
            matches!(e, UpstreamError::Auth { status: 401, .. }),
            "{e:?}"
        );
        let text = text_of(&e);
        // The emulator echoes the key masked, as OpenAI does: neither form may pass.
        assert!(
            !text.contains(wrong) && !text.contains("0123456789"),
            "{text}"
        );
        assert!(!text.contains("***") && !text.contains(KEY), "{text}");
    }
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Recorded OpenAI traffic
// ---------------------------------------------------------------------------------------

/// The one entry of a recorded chat session.
fn recorded(name: &str) -> Value {
    let file = common::repo_file("reference")
        .join(format!("recorded/openai-dotnet/ChatTests/{name}.json"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    doc["Entries"][0].clone()
}

/// A recorded SSE body as the server sent it: the event strings concatenated.
fn recorded_sse(entry: &Value) -> String {
    entry["ResponseBody"]
        .as_array()
        .expect("an array of SSE events")
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect()
}

/// The text deltas of a recorded stream, read independently of the adapter.
fn recorded_deltas(entry: &Value) -> Vec<String> {
    entry["ResponseBody"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().trim())
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| {
            let chunk: Value = serde_json::from_str(data).unwrap();
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
        })
        .collect()
}

/// The request the recording made, as a port request.
fn recorded_request(entry: &Value) -> ChatRequest {
    let body = &entry["RequestBody"];
    ChatRequest {
        model: body["model"].as_str().unwrap().to_owned(),
        system: Vec::new(),
        messages: body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["role"], "user");
                user(m["content"].as_str().unwrap())
            })
            .collect(),
        temperature: None,
        max_tokens: 1024,
        stop: Vec::new(),
        user: None,
        deadline: None,
    }
}

async fn replaying(status: u16, body: Vec<u8>, content_type: &str) -> MockServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(status).set_body_raw(body, content_type))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn the_recorded_hello_world_chat_decodes() {
    let entry = recorded("HelloWorldChat");
    let server = replaying(
        200,
        serde_json::to_vec(&entry["ResponseBody"]).unwrap(),
        "application/json",
    )
    .await;
    let api = adapter_at(format!("{}/v1", server.uri()), KEY);
    let response = api.complete(&recorded_request(&entry)).await.unwrap();
    assert_eq!(response.id, "chatcmpl-D8dUjRkJNE7oAraZr6I7Jy8l3f2eU");
    assert_eq!(response.model, SNAPSHOT);
    assert_eq!(response.text, "Hello! How can I assist you today?");
    assert_eq!(response.raw_finish_reason, "stop");
    assert_eq!(
        (
            response.usage.input_tokens,
            response.usage.output_tokens,
            response.usage.cache_read_tokens,
            response.usage.cache_write_tokens
        ),
        (11, 9, 0, 0)
    );

    // What was sent says the same as what the SDK sent, plus the port's own fields.
    let sent: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    let recorded_body = &entry["RequestBody"];
    assert_eq!(sent["model"], recorded_body["model"]);
    assert_eq!(sent["messages"], recorded_body["messages"]);
    assert_eq!(sent["stream"], false);
}

#[tokio::test]
async fn the_recorded_auth_failure_hides_the_masked_key() {
    let entry = recorded("AuthFailure");
    let server = replaying(
        401,
        serde_json::to_vec(&entry["ResponseBody"]).unwrap(),
        "application/json; charset=utf-8",
    )
    .await;
    let api = adapter_at(format!("{}/v1", server.uri()), KEY);
    let e = api
        .complete(&recorded_request(&entry))
        .await
        .expect_err("401");
    assert!(
        matches!(e, UpstreamError::Auth { status: 401, .. }),
        "{e:?}"
    );
    let text = text_of(&e);
    assert!(text.contains("Incorrect API key provided"), "{text}");
    assert!(
        !text.contains("not-a-re") && !text.contains("***"),
        "{text}"
    );
}

#[tokio::test]
async fn the_recorded_716_event_stream_decodes() {
    let entry = recorded("TokenLogProbabilitiesStreaming_False");
    assert_eq!(entry["ResponseBody"].as_array().unwrap().len(), 716);
    let expected = recorded_deltas(&entry);
    assert_eq!(expected.len(), 712);
    let server = replaying(
        200,
        recorded_sse(&entry).into_bytes(),
        "text/event-stream; charset=utf-8",
    )
    .await;
    let api = adapter_at(format!("{}/v1", server.uri()), KEY);
    let req = recorded_request(&entry);
    let (deltas, done) = stream_of(&api, &req).await;
    assert_eq!(deltas, expected);
    assert!(
        done.text
            .starts_with("The best pizza toppings can vary depending on personal preference"),
        "{}",
        done.text
    );
    assert_eq!(done.text, expected.concat());
    assert_eq!(done.text.len(), 3300);
    assert_eq!(done.id, "chatcmpl-D8dUAJuyyWxWUFRdcu8FB6Vi6yfLu");
    assert_eq!(done.model, SNAPSHOT);
    assert_eq!(done.raw_finish_reason, "stop");
    assert_eq!(
        (
            done.usage.input_tokens,
            done.usage.output_tokens,
            done.usage.cache_read_tokens
        ),
        (22, 712, 0)
    );

    // The request matches the recorded one where the port and the SDK overlap.
    let sent: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    let recorded_body = &entry["RequestBody"];
    for key in ["model", "messages", "stream", "stream_options"] {
        assert_eq!(sent[key], recorded_body[key], "{key}");
    }
}

// ---------------------------------------------------------------------------------------
// A raw HTTP/1.1 server: byte-exact chunking, and seeing the client hang up
// ---------------------------------------------------------------------------------------

/// Serves one request on `listener`: reads it, answers `200 text/event-stream` with
/// `body` sent as one HTTP chunk per `piece` bytes, then (if `hold`) keeps the connection
/// open without ending the body. Returns whether the client closed the connection
/// within 10 s after the last piece.
async fn serve_raw(listener: TcpListener, body: Vec<u8>, piece: usize, hold: bool) -> bool {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    // Headers, then a Content-Length body.
    let body_start = loop {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client hung up mid-request");
        request.extend_from_slice(&buf[..n]);
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while request.len() < body_start + length {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0);
        request.extend_from_slice(&buf[..n]);
    }
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    for part in body.chunks(piece) {
        let mut chunk = format!("{:x}\r\n", part.len()).into_bytes();
        chunk.extend_from_slice(part);
        chunk.extend_from_slice(b"\r\n");
        if socket.write_all(&chunk).await.is_err() {
            return true;
        }
        socket.flush().await.unwrap();
    }
    if !hold {
        let _ = socket.write_all(b"0\r\n\r\n").await;
        return false;
    }
    // Held open: the only way this read ends is the client closing (or a timeout).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.unwrap_or(false)
}

async fn raw_server(
    body: Vec<u8>,
    piece: usize,
    hold: bool,
) -> (String, tokio::task::JoinHandle<bool>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    (base, tokio::spawn(serve_raw(listener, body, piece, hold)))
}

fn chunk_event(content: &str) -> String {
    let chunk = json!({
        "id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "logprobs": null, "finish_reason": null}],
        "usage": null
    });
    format!("data: {chunk}\n\n")
}

#[tokio::test]
async fn any_split_of_the_bytes_decodes_the_same() {
    let entry = recorded("TokenLogProbabilitiesStreaming_False");
    let (base, server) = raw_server(recorded_sse(&entry).into_bytes(), 7, false).await;
    let (deltas, done) = stream_of(&adapter_at(base, KEY), &recorded_request(&entry)).await;
    assert_eq!(deltas, recorded_deltas(&entry));
    assert_eq!(done.usage.output_tokens, 712);
    server.await.unwrap();

    // One byte per HTTP chunk, so characters arrive split; CRLF line ends too.
    let mut body = chunk_event("Grüße aus 東京 🍕").replace("\n\n", "\r\n\r\n");
    body += &chunk_event(" und Neapel");
    body += "data: {\"id\":\"chatcmpl-raw\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    body += "data: {\"id\":\"chatcmpl-raw\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9,\"total_tokens\":14,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n";
    body += "data: [DONE]\n\n";
    let (base, server) = raw_server(body.into_bytes(), 1, false).await;
    let (deltas, done) = stream_of(&adapter_at(base, KEY), &minimal("m", "Hallo")).await;
    assert_eq!(deltas, ["Grüße aus 東京 🍕", " und Neapel"]);
    assert_eq!(done.text, "Grüße aus 東京 🍕 und Neapel");
    assert_eq!(done.raw_finish_reason, "stop");
    assert_eq!(
        (
            done.usage.input_tokens,
            done.usage.output_tokens,
            done.usage.cache_read_tokens
        ),
        (5, 9, 2)
    );
    server.await.unwrap();
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    let (base, server) = raw_server(chunk_event("first").into_bytes(), 4096, true).await;
    let api = adapter_at(base, KEY);
    let mut stream = api.stream(&minimal("m", "Hi")).await.unwrap();
    match stream.next().await {
        Some(Ok(ChatChunk::Delta(text))) => assert_eq!(text, "first"),
        other => panic!("{other:?}"),
    }
    drop(stream);
    assert!(
        server.await.unwrap(),
        "the server saw no hang-up after the stream was dropped"
    );
}

// ---------------------------------------------------------------------------------------
// In-stream errors and answers that are not streams
// ---------------------------------------------------------------------------------------

/// A server answering each `model` with its own SSE body.
async fn sse_cases(cases: &[(&str, String)]) -> MockServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = MockServer::start().await;
    for (model, body) in cases {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(body_partial_json(json!({ "model": model })))
            .respond_with(
                ResponseTemplate::new(200).set_body_raw(body.clone(), "text/event-stream"),
            )
            .mount(&server)
            .await;
    }
    server
}

#[tokio::test]
async fn in_stream_errors_end_the_stream_with_an_error() {
    let first = chunk_event("Partial");
    let secret = format!("The server had an error while using key {KEY}.");
    let server = sse_cases(&[
        (
            "event-error",
            format!(
                "{first}event: error\ndata: {}\n\n",
                json!({"error": {"message": secret, "type": "server_error", "param": null, "code": null}})
            ),
        ),
        (
            "error-key",
            format!(
                "{first}data: {}\n\n",
                json!({"error": {"message": "Rate limit reached.", "type": "tokens", "code": "rate_limit_exceeded"}})
            ),
        ),
        (
            "bare-event-error",
            format!("{first}event: error\ndata: {{\"message\": \"overloaded\"}}\n\n"),
        ),
        (
            "null-error",
            format!(
                "data: {}\n\ndata: [DONE]\n\n",
                json!({"id": "chatcmpl-n", "model": "m", "choices": [{"index": 0, "delta": {"content": "fine"}, "finish_reason": "stop"}], "error": null})
            ),
        ),
        ("not-json", format!("{first}data: {{not json\n\n")),
        ("no-done", first.clone()),
    ])
    .await;
    let api = adapter_at(format!("{}/v1", server.uri()), KEY);
    let run = |model: &'static str| {
        let api = api.clone();
        async move { drain(api.stream(&minimal(model, "Hi")).await.unwrap()).await }
    };

    let (deltas, end) = run("event-error").await;
    assert_eq!(deltas, ["Partial"]);
    let e = end.expect_err("event: error");
    assert!(
        matches!(&e, UpstreamError::Unavailable { status: None, message, .. } if message.contains("The server had an error")),
        "{e:?}"
    );
    assert!(!text_of(&e).contains(KEY), "{e:?}");

    let (deltas, end) = run("error-key").await;
    assert_eq!(deltas, ["Partial"]);
    let e = end.expect_err("an error key");
    assert!(
        matches!(&e, UpstreamError::RateLimited { retry_after: None, message, .. } if message.contains("Rate limit reached.")),
        "{e:?}"
    );

    let (_, end) = run("bare-event-error").await;
    let e = end.expect_err("event: error without an error key");
    assert!(text_of(&e).contains("overloaded"), "{e:?}");

    let (deltas, end) = run("null-error").await;
    assert_eq!(deltas, ["fine"]);
    assert_eq!(
        end.expect("a null error is no error").raw_finish_reason,
        "stop"
    );

    let (_, end) = run("not-json").await;
    let e = end.expect_err("not JSON");
    assert!(matches!(e, UpstreamError::Protocol { .. }), "{e:?}");
    assert!(!text_of(&e).contains("not json"), "never the body: {e:?}");

    let (deltas, end) = run("no-done").await;
    assert_eq!(deltas, ["Partial"]);
    assert_cut_short(&end.expect_err("no [DONE]"));
}

#[tokio::test]
async fn a_json_answer_to_a_stream_request_is_a_protocol_error() {
    let entry = recorded("HelloWorldChat");
    let server = replaying(
        200,
        serde_json::to_vec(&entry["ResponseBody"]).unwrap(),
        "application/json",
    )
    .await;
    let api = adapter_at(format!("{}/v1", server.uri()), KEY);
    let e = api
        .stream(&recorded_request(&entry))
        .await
        .err()
        .expect("not a stream");
    assert!(matches!(e, UpstreamError::Protocol { .. }), "{e:?}");
    assert!(!text_of(&e).contains("Hello!"), "never the body: {e:?}");
}

// ---------------------------------------------------------------------------------------
// Request bodies against the spec
// ---------------------------------------------------------------------------------------

/// A validator for `CreateChatCompletionRequest`, `$ref`s resolved in the spec.
fn chat_request_validator() -> jsonschema::Validator {
    common::spec::validator("CreateChatCompletionRequest")
}

/// The bodies the adapter sends for `requests`, plain then streamed, with the streamed
/// requests' `Accept` header.
async fn sent_bodies(requests: &[ChatRequest]) -> Vec<(Value, Option<String>)> {
    let entry = recorded("HelloWorldChat");
    let server = replaying(
        200,
        serde_json::to_vec(&entry["ResponseBody"]).unwrap(),
        "application/json",
    )
    .await;
    let api = adapter_at(format!("{}/v1", server.uri()), KEY);
    for request in requests {
        api.complete(request).await.unwrap();
        // The answer is JSON, not SSE: only the request matters here.
        let _ = api.stream(request).await;
    }
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(
                r.headers.get("authorization").unwrap().to_str().unwrap(),
                format!("Bearer {KEY}")
            );
            let accept = r
                .headers
                .get("accept")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.body_json().unwrap(), accept)
        })
        .collect()
}

#[tokio::test]
async fn request_bodies_validate_against_the_spec() {
    let full = {
        let mut r = request("ft:gpt-4o-mini-2024-07-18:acme::abc123", "Which cheese?");
        r.stop = vec!["\n\n".into(), "END".into()];
        r
    };
    let long_user = {
        let mut r = minimal(MODEL, "Hi");
        r.user = Some("u".repeat(100));
        r
    };
    let blank_user = {
        let mut r = minimal(MODEL, "Hi");
        r.user = Some("  ".into());
        r.system = vec![SystemBlock {
            text: String::new(),
            cache: false,
        }];
        r
    };
    let requests = [full, minimal(MODEL, "Hi"), long_user, blank_user];
    let sent = sent_bodies(&requests).await;
    assert_eq!(sent.len(), requests.len() * 2);
    let validator = chat_request_validator();
    for (body, _) in &sent {
        let errors = violations(&validator, body);
        assert!(errors.is_empty(), "{body} violates the spec: {errors:?}");
        // `user` is deprecated in favour of `safety_identifier`.
        assert!(body.get("user").is_none(), "{body}");
        assert!(body.get("max_tokens").is_none(), "{body}");
    }

    let (plain, accept) = &sent[0];
    assert_ne!(accept.as_deref(), Some("text/event-stream"));
    assert_eq!(
        plain,
        &json!({
            "model": "ft:gpt-4o-mini-2024-07-18:acme::abc123",
            "messages": [
                {"role": "system", "content": "You answer questions about pizza.\n\nBe brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! Ask me about pizza."},
                {"role": "user", "content": "Which cheese?"}
            ],
            "max_completion_tokens": 256,
            "temperature": 0.7,
            "stop": ["\n\n", "END"],
            "safety_identifier": "user-1234",
            "stream": false
        })
    );
    let (streamed, accept) = &sent[1];
    assert_eq!(accept.as_deref(), Some("text/event-stream"));
    let mut expected = plain.clone();
    expected["stream"] = json!(true);
    expected["stream_options"] = json!({"include_usage": true});
    assert_eq!(streamed, &expected);

    // Nothing optional is sent empty: no system message, temperature, stop or user.
    assert_eq!(
        sent[2].0,
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_completion_tokens": 64,
            "stream": false
        })
    );
    // A user id over the spec's 64 characters goes as its (stable) SHA-256.
    let hashed = sent[4].0["safety_identifier"].as_str().unwrap();
    assert_eq!(hashed.len(), 64);
    assert!(hashed.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(sent[5].0["safety_identifier"], hashed);
    // A blank user and empty system blocks send nothing.
    assert_eq!(sent[6].0, sent[2].0);

    // The schema bites: the shapes the adapter avoids are rejected.
    let mut broken = sent[0].0.clone();
    broken["stop"] = json!([]);
    assert!(!violations(&validator, &broken).is_empty(), "empty stop");
    let mut broken = sent[0].0.clone();
    broken["messages"] = json!([]);
    assert!(!violations(&validator, &broken).is_empty(), "no messages");
    let mut broken = sent[0].0.clone();
    broken["safety_identifier"] = json!("u".repeat(65));
    assert!(!violations(&validator, &broken).is_empty(), "long user");
    let mut broken = sent[0].0.clone();
    broken["temperature"] = json!(2.5);
    assert!(!violations(&validator, &broken).is_empty(), "temperature");
}
