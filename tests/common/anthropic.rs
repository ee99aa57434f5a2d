//! Reading the Anthropic adapter's answer stream, for the tests against recorded traffic
//! and against the emulator.

use finetune_core::ports::UpstreamError;
use finetune_core::ports::chat::{Chat as _, ChatChunk, ChatRequest, ChatResponse};
use finetune_providers::anthropic::Anthropic;
use futures_util::StreamExt as _;

/// Everything a stream yielded: its deltas, then its end (`Done` or an error).
pub struct Streamed {
    pub deltas: Vec<String>,
    pub end: Result<ChatResponse, UpstreamError>,
}

/// Streams `request` to its end. Panics if the stream does not start, yields anything
/// after its end, or stops without `Done` or an error.
pub async fn collect(adapter: &Anthropic, request: &ChatRequest) -> Streamed {
    let mut stream = adapter.stream(request).await.expect("the stream starts");
    let mut deltas = Vec::new();
    let mut end = None;
    while let Some(item) = stream.next().await {
        assert!(end.is_none(), "an item after the end of the stream");
        match item {
            Ok(ChatChunk::Delta(d)) => deltas.push(d),
            Ok(ChatChunk::Done(r)) => end = Some(Ok(r)),
            Err(e) => end = Some(Err(e)),
        }
    }
    Streamed {
        deltas,
        end: end.expect("the stream ends with Done or an error"),
    }
}
