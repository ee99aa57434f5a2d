//! The completion port: what serving needs from a chat provider (OpenAI, Anthropic),
//! in provider-neutral terms.

use std::pin::Pin;

use futures_util::Stream;

use super::UpstreamError;

/// Who wrote a conversation turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    /// The end user asking.
    User,
    /// The model answering (an earlier answer, given back as context).
    Assistant,
}

/// One turn of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: ChatRole,
    /// Its text.
    pub content: String,
}

/// A block of the system prompt. `cache` marks the end of a prefix the provider should
/// cache (Anthropic `cache_control: {"type": "ephemeral"}`; OpenAI caches on its own).
#[derive(Debug, Clone, PartialEq)]
pub struct SystemBlock {
    /// The block's text.
    pub text: String,
    /// Whether the prompt up to and including this block should be cached.
    pub cache: bool,
}

/// One completion request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The provider's model name (a tier's base or fine-tuned model).
    pub model: String,
    /// System prompt blocks in order (the knowledge base first when injected).
    pub system: Vec<SystemBlock>,
    /// The conversation, oldest first; it ends with a user turn.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature; None leaves the provider's default.
    pub temperature: Option<f64>,
    /// Maximum output tokens (Anthropic requires it; OpenAI `max_completion_tokens`).
    pub max_tokens: u32,
    /// Stop sequences (at most 4).
    pub stop: Vec<String>,
    /// The end user, for the provider's abuse monitoring (OpenAI `safety_identifier`,
    /// Anthropic `metadata.user_id`). Never an email or name.
    pub user: Option<String>,
    /// The caller's deadline (from gRPC's `grpc-timeout`): no retry starts that would end
    /// after it, and no attempt lasts longer than the time left.
    pub deadline: Option<tokio::time::Instant>,
}

/// Token usage normalised across providers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatUsage {
    /// All prompt tokens, including those read from or written to the cache.
    pub input_tokens: u64,
    /// Tokens generated in the answer.
    pub output_tokens: u64,
    /// The part of input_tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// The part of input_tokens written to the prompt cache (Anthropic bills it at 1.25x).
    pub cache_write_tokens: u64,
}

/// A finished completion.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The provider's response id (`chatcmpl-...`, `msg_...`).
    pub id: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    /// The text of the answer: text content only (thinking blocks are skipped).
    pub text: String,
    /// Why generation stopped, as the adapter normalised it.
    pub finish_reason: FinishReason,
    /// The provider's own stop reason, kept for callers who need the detail: `stop`,
    /// `length`, `content_filter`, `tool_calls` (OpenAI); `end_turn`, `max_tokens`,
    /// `stop_sequence`, `refusal`, `tool_use` (Anthropic); empty when none was sent.
    pub raw_finish_reason: String,
    /// Tokens read and written, as the provider billed them.
    pub usage: ChatUsage,
}

/// Why generation stopped, in provider-neutral terms; each adapter maps its provider's
/// stop reasons onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// The output token limit was reached.
    Length,
    /// The provider withheld content (a content filter, or a safety refusal).
    ContentFilter,
    /// A reason without a neutral meaning here (tool calls, a paused turn, one this
    /// version does not know) or none at all: the raw reason says which.
    Other,
}

/// One item of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatChunk {
    /// The next piece of text.
    Delta(String),
    /// The end: the whole response (its text is the concatenated deltas).
    Done(ChatResponse),
}

/// A streamed completion. It yields deltas then exactly one `Done`; a stream that stops
/// without `Done` (cut connection, missing `[DONE]`/`message_stop`, an in-stream error
/// event) yields an error instead, never a silent end. Dropping it cancels the request.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, UpstreamError>> + Send>>;

/// What serving needs from a chat provider: one completion, whole or streamed.
#[async_trait::async_trait]
pub trait Chat: Send + Sync + 'static {
    /// `openai` or `anthropic`.
    fn provider(&self) -> &'static str;
    /// Answers `request` in one response (retried by the adapter's policy while safe).
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, UpstreamError>;
    /// Opens a streamed answer to `request`; see [`ChatStream`] for what it yields.
    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, UpstreamError>;
}
