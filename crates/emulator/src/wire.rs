//! What the front layer hands the handlers and what both use to answer: the request id,
//! the markers of stream faults, and paced SSE bodies. It names neither the handlers nor
//! the front layer, so the arrows run one way: front and handlers -> wire.

use axum::body::{Body, Bytes};
use tokio_stream::wrappers::ReceiverStream;

use crate::api::{random_hex, random_id};
use crate::app::App;

/// The request id of a request, set by the front layer (`request-id`, `request_id`).
#[derive(Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// Tells the handler to end its stream with an `event: error` (overloaded) after
/// `after_chunks` events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorEvent {
    pub(crate) after_chunks: u32,
}

/// A request id as Anthropic forms them (`req_011C` and 20 letters and digits).
pub(crate) fn anthropic_request_id() -> String {
    format!("req_011C{}", random_id(20))
}

/// A request id as OpenAI forms them (`req_` and 32 hex digits).
pub(crate) fn openai_request_id() -> String {
    format!("req_{}", random_hex())
}

/// Tells a streaming handler (chat completions, messages) to cut its stream short.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Truncate {
    pub(crate) after_chunks: u32,
    pub(crate) abort: bool,
}

/// An SSE body that sends `events` one by one, `token_secs` apart on the emulated clock,
/// then, with `abort`, breaks off with an error instead of ending cleanly. A client that
/// leaves early is counted in the stats as an abandoned stream.
pub(crate) fn paced_sse(app: &App, events: Vec<String>, abort: bool) -> Body {
    let delay = app.clock.real(app.config.token_secs);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let faults = app.faults.clone();
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Ok(Bytes::from(event))).await.is_err() {
                // The client went away.
                faults.note_abandoned_stream();
                return;
            }
        }
        if abort {
            let _ = tx
                .send(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "stream cut by an emulator fault",
                )))
                .await;
        }
    });
    Body::from_stream(ReceiverStream::new(rx))
}
