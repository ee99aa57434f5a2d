//! The OpenAI adapter (reqwest + serde_json): files, uploads, fine-tuning jobs and chat
//! completions (plain and streamed, SSE parsed by eventsource-stream).
//!
//! Reads, cancels and chat completions are retried by the [`RetryPolicy`]; creates (jobs,
//! files, uploads) are sent once, and the job manager makes them safe to repeat. Every
//! failure is classified into an [`UpstreamError`] from the status and OpenAI's error
//! envelope; messages never carry the API key or a raw response body.

use std::borrow::Cow;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use futures_util::stream::{self, Stream};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::multipart::{Form, Part};
use reqwest::{Body, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::OpenAiConfig;
use crate::types::{
    ApiError, Checkpoint, CreateJobRequest, ErrorEnvelope, FileObject, Job, JobEvent, Page,
    UploadObject, UploadPart,
};
use finetune_core::ports::chat::{
    Chat, ChatChunk, ChatRequest, ChatResponse, ChatRole, ChatStream, ChatUsage, FinishReason,
};
use finetune_core::ports::retry::{Failure, RetryPolicy, attempt_timeout};
use finetune_core::ports::{Refusal, UpstreamError};
/// OpenAI key shapes, and OpenAI's masked echo of a key (`sk-abc****wxyz`).
const KEY_SHAPES: &str = r"[A-Za-z0-9_\-]*\*{3,}[A-Za-z0-9_\-]*|\bsk-[A-Za-z0-9_\-]{6,}";

use crate::http::{
    Redactor, create_transport_error, describe_content, describe_json_error,
    install_crypto_provider, refusal_of_status, send_once, transport_error, truncate, unconfirmed,
};
use finetune_core::error::Error;

/// The `provider` of every error this adapter returns.
const PROVIDER: &str = "openai";

/// The purpose every file of this service is uploaded with.
const PURPOSE: &str = "fine-tune";
/// The MIME type declared to the Uploads API (as the official SDK recordings do).
const UPLOAD_MIME_TYPE: &str = "text/jsonl";
/// Chunk size when streaming a file from disk into a request body.
const READ_CHUNK: usize = 64 << 10;

/// The OpenAI fine-tuning client. Cheap to clone (the HTTP client is shared).
#[derive(Clone)]
pub struct OpenAi {
    http: reqwest::Client,
    base: Url,
    upload_threshold_bytes: u64,
    part_size_bytes: u64,
    timeout: Duration,
    retry: RetryPolicy,
    redactor: Arc<Redactor>,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("base_url", &self.base.as_str())
            .field("upload_threshold_bytes", &self.upload_threshold_bytes)
            .field("part_size_bytes", &self.part_size_bytes)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
    /// A client for `config`; fails on an empty key, a malformed base URL, a zero part
    /// size, or header values HTTP cannot carry (none of them echoed).
    pub fn new(config: OpenAiConfig) -> Result<OpenAi, Error> {
        install_crypto_provider();
        let key = config.api_key.trim();
        if key.is_empty() {
            return Err(Error::Config("the OpenAI API key is empty".to_owned()));
        }
        if config.part_size_bytes == 0 {
            return Err(Error::Config(
                "the OpenAI upload part size must be at least 1 byte".to_owned(),
            ));
        }
        let base = parse_base_url(&config.base_url)?;

        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            Error::Config("the OpenAI API key contains characters not allowed in a header".into())
        })?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        for (name, value, what) in [
            (
                "openai-organization",
                &config.organization,
                "OpenAI organization",
            ),
            ("openai-project", &config.project, "OpenAI project"),
        ] {
            if let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                let value = HeaderValue::from_str(value).map_err(|_| {
                    Error::Config(format!(
                        "the {what} id contains characters not allowed in a header"
                    ))
                })?;
                headers.insert(HeaderName::from_static(name), value);
            }
        }

        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("finetune/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the OpenAI HTTP client: {e}")))?;
        Ok(OpenAi {
            http,
            base,
            upload_threshold_bytes: config.upload_threshold_bytes,
            part_size_bytes: config.part_size_bytes,
            timeout: config.timeout,
            retry: config.retry,
            redactor: Arc::new(Redactor::new(key, KEY_SHAPES)),
        })
    }

    /// `GET /files/{id}`.
    pub async fn get_file(&self, id: &str) -> Result<FileObject, UpstreamError> {
        self.call(self.http.get(self.url(&["files", id])), "file")
            .await
    }

    /// `POST /uploads`: opens an Upload of `bytes` bytes for a fine-tuning JSONL file.
    pub async fn create_upload(
        &self,
        filename: &str,
        bytes: u64,
    ) -> Result<UploadObject, UpstreamError> {
        #[derive(Serialize)]
        struct CreateUpload<'a> {
            filename: &'a str,
            purpose: &'a str,
            bytes: u64,
            mime_type: &'a str,
        }
        let body = CreateUpload {
            filename,
            purpose: PURPOSE,
            bytes,
            mime_type: UPLOAD_MIME_TYPE,
        };
        self.call_once(self.http.post(self.url(&["uploads"])).json(&body), "upload")
            .await
    }

    /// `POST /uploads/{id}/parts`: sends `len` bytes of `path` from `offset`, streamed
    /// from disk.
    pub async fn add_upload_part(
        &self,
        upload_id: &str,
        path: &Path,
        offset: u64,
        len: u64,
    ) -> Result<UploadPart, UpstreamError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| local_error(path, &e))?;
        file.seek(io::SeekFrom::Start(offset))
            .await
            .map_err(|e| local_error(path, &e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "part".to_owned());
        let data = file_part(file, len, name)?;
        let form = Form::new().part("data", data);
        self.call_once(
            self.http
                .post(self.url(&["uploads", upload_id, "parts"]))
                .multipart(form),
            "upload part",
        )
        .await
    }

    /// `POST /uploads/{id}/complete` with the parts in file order.
    pub async fn complete_upload(
        &self,
        upload_id: &str,
        part_ids: &[String],
    ) -> Result<UploadObject, UpstreamError> {
        #[derive(Serialize)]
        struct Complete<'a> {
            part_ids: &'a [String],
        }
        self.call_once(
            self.http
                .post(self.url(&["uploads", upload_id, "complete"]))
                .json(&Complete { part_ids }),
            "upload",
        )
        .await
    }

    /// `POST /uploads/{id}/cancel`.
    pub async fn cancel_upload(&self, upload_id: &str) -> Result<UploadObject, UpstreamError> {
        self.call(
            self.http.post(self.url(&["uploads", upload_id, "cancel"])),
            "upload",
        )
        .await
    }

    async fn upload_whole(
        &self,
        path: &Path,
        filename: &str,
        size: u64,
    ) -> Result<FileObject, UpstreamError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| local_error(path, &e))?;
        let form = Form::new()
            .text("purpose", PURPOSE)
            .part("file", file_part(file, size, filename.to_owned())?);
        self.call_once(self.http.post(self.url(&["files"])).multipart(form), "file")
            .await
    }

    async fn upload_in_parts(
        &self,
        path: &Path,
        filename: &str,
        size: u64,
    ) -> Result<FileObject, UpstreamError> {
        let upload = self.create_upload(filename, size).await?;
        let result = self.send_parts(&upload.id, path, size).await;
        if result.is_err() {
            // An abandoned Upload would linger until it expires (an hour): best effort.
            if let Err(e) = self.cancel_upload(&upload.id).await {
                tracing::debug!(upload_id = %upload.id, error = %e, "cancelling the upload failed");
            }
        }
        result
    }

    async fn send_parts(
        &self,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<FileObject, UpstreamError> {
        let mut part_ids = Vec::new();
        let mut offset = 0;
        while offset < size {
            let len = self.part_size_bytes.min(size - offset);
            part_ids.push(self.add_upload_part(upload_id, path, offset, len).await?.id);
            offset += len;
        }
        let upload = self.complete_upload(upload_id, &part_ids).await?;
        upload.file.ok_or_else(|| UpstreamError::Protocol {
            provider: PROVIDER,
            message: format!(
                "the completed upload has no file (status {:?})",
                truncate(&upload.status, 40)
            ),
        })
    }

    /// `base` + path segments, each percent-encoded as one segment.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("the base URL was checked to be hierarchical")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// Sends a request that is safe to repeat, retrying as the policy says, and decodes a
    /// 2xx body as `T`; anything else is classified.
    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<T, UpstreamError> {
        self.call_until(request, what, None).await
    }

    /// [`OpenAi::call`] with no retry that would end past `deadline`, and no attempt
    /// longer than the time left.
    async fn call_until<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &'static str,
        deadline: Option<Instant>,
    ) -> Result<T, UpstreamError> {
        let request = request.build().map_err(|e| self.transport_error(&e))?;
        self.retry
            .run(what, deadline, || async {
                let mut request = request.try_clone().ok_or_else(|| {
                    Failure::from(protocol("a request to retry has a streamed body"))
                })?;
                *request.timeout_mut() = Some(attempt_timeout(self.timeout, deadline));
                self.attempt(request, what).await
            })
            .await
    }

    /// Sends a request once: for creates that are not idempotent upstream (jobs, files,
    /// uploads), which the job manager makes safe to repeat by looking first. A failure
    /// after the request left (a broken or timed-out exchange, an unreadable 2xx body) is
    /// [`UpstreamError::Unconfirmed`]: OpenAI may have done the work.
    async fn call_once<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<T, UpstreamError> {
        let request = request.build().map_err(|e| self.transport_error(&e))?;
        let response = send_once(
            &self.http,
            request,
            &self.retry,
            PROVIDER,
            |e| create_transport_error(self.transport_error(e), e),
            |status, headers, body| self.status_error(status, headers, body),
        )
        .await
        .map_err(|f| f.error)?;
        // A 2xx means the create was done: an answer that cannot be read does not undo it.
        self.decode(response, what).await.map_err(unconfirmed)
    }

    /// One HTTP exchange: a 2xx body decoded as `T`, or the classified failure with the
    /// response's retry hints.
    async fn attempt<T: DeserializeOwned>(
        &self,
        request: reqwest::Request,
        what: &'static str,
    ) -> Result<T, Failure> {
        let response = self.send_once(request).await?;
        self.decode(response, what).await.map_err(Failure::from)
    }

    /// A 2xx response's body decoded as `T`.
    async fn decode<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
        what: &'static str,
    ) -> Result<T, UpstreamError> {
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol {
            provider: PROVIDER,
            message: format!(
                "expected a {what} as JSON, got {} ({})",
                describe_content(&headers, body.len()),
                describe_json_error(&e)
            ),
        })
    }

    /// Classifies a non-2xx response: the status decides the kind, the error envelope
    /// (when there is one) supplies the message, code and param.
    fn status_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
        let code = status.as_u16();
        let api = decode_api_error(body);
        let message = match &api {
            Some(e) if !e.message.trim().is_empty() => self.redactor.clean(&e.message),
            _ => format!(
                "HTTP {code} without an OpenAI error body ({})",
                describe_content(headers, body.len())
            ),
        };
        // 400/408/409/422 and any other refusal (405, 413, 415...).
        crate::http::status_error(PROVIDER, code, headers, message, |message| {
            let api = api.unwrap_or_default();
            let upstream_code = api.code.map(|c| self.redactor.clean(&c));
            let param = api.param.map(|p| self.redactor.clean(&p));
            UpstreamError::Rejected {
                provider: PROVIDER,
                status: code,
                refusal: refusal(code, upstream_code.as_deref(), param.as_deref()),
                code: upstream_code,
                param,
                message,
            }
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> UpstreamError {
        transport_error(PROVIDER, self.timeout, &self.redactor, e)
    }

    /// One HTTP exchange through [`send_once`] with this adapter's classification.
    async fn send_once(&self, request: reqwest::Request) -> Result<reqwest::Response, Failure> {
        send_once(
            &self.http,
            request,
            &self.retry,
            PROVIDER,
            |e| self.transport_error(e),
            |status, headers, body| self.status_error(status, headers, body),
        )
        .await
    }
}

/// The fine-tuning API in OpenAI's own types; [`FineTuning`](finetune_core::ports::FineTuning)
/// is these, translated.
impl OpenAi {
    /// Uploads `path` as a `fine-tune` file named `filename`, in parts above the upload threshold.
    pub async fn upload_file(
        &self,
        path: &Path,
        filename: &str,
    ) -> Result<FileObject, UpstreamError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| local_error(path, &e))?
            .len();
        if size <= self.upload_threshold_bytes {
            self.upload_whole(path, filename, size).await
        } else {
            self.upload_in_parts(path, filename, size).await
        }
    }

    /// One page of this service's `fine-tune` files, newest first, after the id `after`.
    pub async fn list_files(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<FileObject>, UpstreamError> {
        let mut url = paged(self.url(&["files"]), after, limit);
        url.query_pairs_mut()
            .append_pair("purpose", PURPOSE)
            .append_pair("order", "desc");
        self.call(self.http.get(url), "page of files").await
    }

    /// Creates a fine-tuning job; sent once, never retried, since a retry could create a second job.
    pub async fn create_job(&self, request: &CreateJobRequest) -> Result<Job, UpstreamError> {
        // Whole-number hyperparameters serialize as integers (see types::AutoOr).
        let body = serde_json::to_value(request).map_err(|e| UpstreamError::Local {
            provider: PROVIDER,
            message: format!("could not encode the job request: {e}"),
        })?;
        self.call_once(
            self.http
                .post(self.url(&["fine_tuning", "jobs"]))
                .json(&body),
            "fine-tuning job",
        )
        .await
    }

    /// Fetches the job `id` as OpenAI reports it now.
    pub async fn get_job(&self, id: &str) -> Result<Job, UpstreamError> {
        self.call(
            self.http.get(self.url(&["fine_tuning", "jobs", id])),
            "fine-tuning job",
        )
        .await
    }

    /// One page of jobs after the id `after`, filtered by every `metadata` key/value pair.
    pub async fn list_jobs(
        &self,
        after: Option<&str>,
        limit: u32,
        metadata: &[(String, String)],
    ) -> Result<Page<Job>, UpstreamError> {
        let mut url = self.url(&["fine_tuning", "jobs"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(after) = after {
                query.append_pair("after", after);
            }
            query.append_pair("limit", &limit.to_string());
            // The spec's deepObject style: `metadata[key]=value`.
            for (key, value) in metadata {
                query.append_pair(&format!("metadata[{key}]"), value);
            }
        }
        self.call(self.http.get(url), "page of fine-tuning jobs")
            .await
    }

    /// Asks OpenAI to cancel the job `id`; returns the job as it is after the request.
    pub async fn cancel_job(&self, id: &str) -> Result<Job, UpstreamError> {
        self.call(
            self.http
                .post(self.url(&["fine_tuning", "jobs", id, "cancel"])),
            "fine-tuning job",
        )
        .await
    }

    /// One page of the job's events after the event id `after` (OpenAI returns newest first).
    pub async fn list_events(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<JobEvent>, UpstreamError> {
        let url = paged(
            self.url(&["fine_tuning", "jobs", id, "events"]),
            after,
            limit,
        );
        self.call(self.http.get(url), "page of fine-tuning events")
            .await
    }

    /// One page of the job's checkpoints after the checkpoint id `after`.
    pub async fn list_checkpoints(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<Checkpoint>, UpstreamError> {
        let url = paged(
            self.url(&["fine_tuning", "jobs", id, "checkpoints"]),
            after,
            limit,
        );
        self.call(self.http.get(url), "page of checkpoints").await
    }
}

// ---------------------------------------------------------------------------------------
// Chat completions (the completion port)
// ---------------------------------------------------------------------------------------

/// The spec's `maxLength` of `safety_identifier`.
const SAFETY_IDENTIFIER_MAX_CHARS: usize = 64;
/// Said of an in-stream error that carries no message (openai-python's wording).
const STREAM_ERROR_FALLBACK: &str = "An error occurred during streaming";

#[async_trait::async_trait]
impl Chat for OpenAi {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    /// `POST /chat/completions` with `stream: false`.
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, UpstreamError> {
        let body = ChatCompletionBody::new(request, false);
        let completion: WireCompletion = self
            .call_until(
                self.http
                    .post(self.url(&["chat", "completions"]))
                    .json(&body),
                "chat completion",
                request.deadline,
            )
            .await?;
        completion.into_response()
    }

    /// `POST /chat/completions` with `stream: true` and usage included. The returned
    /// stream owns the HTTP response: dropping it closes the connection.
    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, UpstreamError> {
        let body = ChatCompletionBody::new(request, true);
        let response = self
            .send_streaming(
                self.http
                    .post(self.url(&["chat", "completions"]))
                    .header(ACCEPT, "text/event-stream")
                    .json(&body),
                request.deadline,
            )
            .await?;
        let events = response.bytes_stream().eventsource().boxed();
        Ok(Box::pin(
            ChatEvents::new(self.clone(), events).into_stream(),
        ))
    }
}

impl OpenAi {
    /// Sends a request whose 2xx answer is an SSE stream and returns the response with
    /// its body unread; a non-2xx status is classified as [`OpenAi::call`] does. Opening
    /// the stream is retried (nothing has been received yet); a stream that breaks later
    /// is not.
    async fn send_streaming(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Option<Instant>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let request = request.build().map_err(|e| self.transport_error(&e))?;
        let response = self
            .retry
            .run("chat completion stream", deadline, || async {
                let request = request.try_clone().ok_or_else(|| {
                    Failure::from(protocol("a request to retry has a streamed body"))
                })?;
                self.send_once(request).await
            })
            .await?;
        let headers = response.headers().clone();
        // A body that is not SSE (a proxy's page, a JSON answer) would otherwise read as
        // a stream without [DONE]; name it for what it is. No content type is tolerated.
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        if let Some(content_type) = content_type
            && !content_type.starts_with("text/event-stream")
        {
            let body = response
                .bytes()
                .await
                .map_err(|e| self.transport_error(&e))?;
            return Err(UpstreamError::Protocol {
                provider: PROVIDER,
                message: format!(
                    "expected a text/event-stream of chat completion chunks, got {}",
                    describe_content(&headers, body.len())
                ),
            });
        }
        Ok(response)
    }
}

/// `CreateChatCompletionRequest`: the part of it the completion port uses.
#[derive(Serialize)]
struct ChatCompletionBody<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    max_completion_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    /// At least one sequence when present (the spec's `minItems: 1`).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_identifier: Option<String>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Cow<'a, str>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl<'a> ChatCompletionBody<'a> {
    fn new(request: &'a ChatRequest, stream: bool) -> ChatCompletionBody<'a> {
        // OpenAI caches prompt prefixes by itself: the blocks' cache marks need no wire form.
        let system: Vec<&str> = request
            .system
            .iter()
            .map(|b| b.text.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        let mut messages = Vec::with_capacity(request.messages.len() + 1);
        if !system.is_empty() {
            messages.push(WireMessage {
                role: "system",
                content: Cow::Owned(system.join("\n\n")),
            });
        }
        messages.extend(request.messages.iter().map(|m| WireMessage {
            role: match m.role {
                ChatRole::User => "user",
                ChatRole::Assistant => "assistant",
            },
            content: Cow::Borrowed(m.content.as_str()),
        }));
        ChatCompletionBody {
            model: &request.model,
            messages,
            max_completion_tokens: request.max_tokens,
            temperature: request.temperature,
            stop: &request.stop,
            safety_identifier: request.user.as_deref().and_then(safety_identifier),
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        }
    }
}

/// The end user as OpenAI's `safety_identifier`: as given when it fits the spec's 64
/// characters, else its SHA-256 in hex (64 characters, still stable per user); blank is none.
fn safety_identifier(user: &str) -> Option<String> {
    if user.trim().is_empty() {
        None
    } else if user.chars().count() <= SAFETY_IDENTIFIER_MAX_CHARS {
        Some(user.to_owned())
    } else {
        Some(hex::encode(Sha256::digest(user.as_bytes())))
    }
}

/// `CreateChatCompletionResponse`, what the port needs of it.
#[derive(Deserialize)]
struct WireCompletion {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    message: Option<WireAssistantMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireAssistantMessage {
    #[serde(default)]
    content: Option<String>,
}

/// `CompletionUsage`.
#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Deserialize)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<WireUsage> for ChatUsage {
    fn from(u: WireUsage) -> ChatUsage {
        ChatUsage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cache_read_tokens: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            // OpenAI does not bill cache writes separately.
            cache_write_tokens: 0,
        }
    }
}

impl WireCompletion {
    fn into_response(self) -> Result<ChatResponse, UpstreamError> {
        // The request never sets `n`, so choice 0 is the answer.
        let Some(choice) = self.choices.into_iter().min_by_key(|c| c.index) else {
            return Err(UpstreamError::Protocol {
                provider: PROVIDER,
                message: "the chat completion has no choices".to_owned(),
            });
        };
        let usage = match self.usage {
            Some(usage) => usage.into(),
            None => {
                tracing::warn!(id = %self.id, "the chat completion reports no usage");
                ChatUsage::default()
            }
        };
        Ok(ChatResponse {
            id: self.id,
            model: self.model,
            text: choice.message.and_then(|m| m.content).unwrap_or_default(),
            finish_reason: finish_reason(choice.finish_reason.as_deref()),
            raw_finish_reason: choice.finish_reason.unwrap_or_default(),
            usage,
        })
    }
}

/// The neutral finish reason of a chat completion's `finish_reason`.
fn finish_reason(raw: Option<&str>) -> FinishReason {
    match raw {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        // tool_calls, function_call (never requested here), anything newer, or none.
        _ => FinishReason::Other,
    }
}

/// `CreateChatCompletionStreamResponse`, what the port needs of it.
#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
}

type SseEvents = futures_util::stream::BoxStream<
    'static,
    Result<eventsource_stream::Event, EventStreamError<reqwest::Error>>,
>;

/// The decoding state of one streamed completion.
struct ChatEvents {
    api: OpenAi,
    events: SseEvents,
    id: String,
    model: String,
    text: String,
    finish_reason: Option<String>,
    usage: Option<ChatUsage>,
}

/// What one step of the decoder produced.
enum Step {
    /// An item; more may follow.
    Next(ChatChunk),
    /// The last item: `Done` or an error.
    Last(Result<ChatChunk, UpstreamError>),
}

impl ChatEvents {
    fn new(api: OpenAi, events: SseEvents) -> ChatEvents {
        ChatEvents {
            api,
            events,
            id: String::new(),
            model: String::new(),
            text: String::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// Deltas, then one `Done` or one error; nothing after either.
    fn into_stream(self) -> impl Stream<Item = Result<ChatChunk, UpstreamError>> + Send + 'static {
        stream::unfold(Some(self), |state| async move {
            let mut state = state?;
            match state.step().await {
                Step::Next(chunk) => Some((Ok(chunk), Some(state))),
                Step::Last(item) => Some((item, None)),
            }
        })
    }

    async fn step(&mut self) -> Step {
        loop {
            let event = match self.events.next().await {
                Some(Ok(event)) => event,
                None => return Step::Last(Err(cut_short("the connection closed".to_owned()))),
                Some(Err(EventStreamError::Transport(e))) => {
                    return Step::Last(Err(match self.api.transport_error(&e) {
                        UpstreamError::Unavailable { message, .. } => cut_short(message),
                        other => other,
                    }));
                }
                // Their text may quote the body: say only what kind of damage it was.
                Some(Err(EventStreamError::Utf8(_))) => {
                    return Step::Last(Err(protocol("the event stream is not UTF-8")));
                }
                Some(Err(EventStreamError::Parser(_))) => {
                    return Step::Last(Err(protocol("the event stream is not valid SSE")));
                }
            };
            // openai-python's rules (_streaming.py): `[DONE]` ends the stream, every other
            // payload is JSON, and `event: error` or an `error` key is an error.
            if event.data.starts_with("[DONE]") {
                return Step::Last(Ok(ChatChunk::Done(self.finish())));
            }
            let value: Value = match serde_json::from_str(&event.data) {
                Ok(value) => value,
                Err(e) => {
                    return Step::Last(Err(protocol(&format!(
                        "a chat completion chunk is not JSON ({})",
                        describe_json_error(&e)
                    ))));
                }
            };
            if let Some(error) = self.stream_error(&event.event, &value) {
                return Step::Last(Err(error));
            }
            let chunk: WireChunk = match serde_json::from_value(value) {
                Ok(chunk) => chunk,
                Err(e) => {
                    return Step::Last(Err(protocol(&format!(
                        "unexpected chat completion chunk ({})",
                        describe_json_error(&e)
                    ))));
                }
            };
            if let Some(delta) = self.absorb(chunk) {
                return Step::Next(ChatChunk::Delta(delta));
            }
        }
    }

    /// Takes in one chunk; returns its text, if it has any.
    fn absorb(&mut self, chunk: WireChunk) -> Option<String> {
        if self.id.is_empty() {
            self.id = chunk.id;
        }
        if self.model.is_empty() {
            self.model = chunk.model;
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        // The request never sets `n`: only choice 0 exists.
        let choice = chunk.choices.into_iter().find(|c| c.index == 0)?;
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason);
        }
        let content = choice.delta?.content.filter(|c| !c.is_empty())?;
        self.text.push_str(&content);
        Some(content)
    }

    fn finish(&mut self) -> ChatResponse {
        let usage = self.usage.unwrap_or_else(|| {
            // Asked for with `include_usage`; an OpenAI-compatible server may not send it.
            tracing::warn!(id = %self.id, "the chat completion stream reported no usage");
            ChatUsage::default()
        });
        ChatResponse {
            id: std::mem::take(&mut self.id),
            model: std::mem::take(&mut self.model),
            text: std::mem::take(&mut self.text),
            finish_reason: finish_reason(self.finish_reason.as_deref()),
            raw_finish_reason: self.finish_reason.take().unwrap_or_default(),
            usage,
        }
    }

    /// The error an event reports, if it reports one: `event: error`, or a payload
    /// whose `error` is set (truthy, as in Python).
    fn stream_error(&self, event: &str, value: &Value) -> Option<UpstreamError> {
        let error = match value.get("error") {
            Some(error) if truthy(error) => error,
            _ if event == "error" => value,
            _ => return None,
        };
        let text = |key: &str| {
            error
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let message = match error {
            Value::String(s) if !s.trim().is_empty() => s.trim(),
            _ => text("message").unwrap_or(STREAM_ERROR_FALLBACK),
        };
        let message = self
            .api
            .redactor
            .clean(&format!("error event in the stream: {message}"));
        let rate_limited = [text("code"), text("type")]
            .into_iter()
            .flatten()
            .any(|t| t == "rate_limit_exceeded");
        Some(if rate_limited {
            UpstreamError::RateLimited {
                provider: PROVIDER,
                message,
                retry_after: None,
            }
        } else {
            // After a 200 there is no status to classify by; OpenAI's own in-stream
            // errors are server-side failures.
            UpstreamError::Unavailable {
                provider: PROVIDER,
                status: None,
                message,
            }
        })
    }
}

/// A stream that stopped before `data: [DONE]`: whatever arrived is incomplete.
fn cut_short(why: String) -> UpstreamError {
    UpstreamError::Unavailable {
        provider: PROVIDER,
        status: None,
        message: format!("stream ended before [DONE]: {why}"),
    }
}

fn protocol(message: &str) -> UpstreamError {
    UpstreamError::Protocol {
        provider: PROVIDER,
        message: message.to_owned(),
    }
}

/// Python's truthiness of a JSON value (`if not error`).
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn parse_base_url(raw: &str) -> Result<Url, Error> {
    let url = Url::parse(raw.trim())
        .map_err(|e| Error::Config(format!("the OpenAI base URL is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::Config(
            "the OpenAI base URL must be an http(s) URL such as https://api.openai.com/v1".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Config(
            "the OpenAI base URL must not have a query or fragment".into(),
        ));
    }
    Ok(url)
}

fn paged(mut url: Url, after: Option<&str>, limit: u32) -> Url {
    {
        let mut query = url.query_pairs_mut();
        if let Some(after) = after {
            query.append_pair("after", after);
        }
        query.append_pair("limit", &limit.to_string());
    }
    url
}

/// A multipart file part of exactly `len` bytes streamed from `file`'s position.
fn file_part(file: tokio::fs::File, len: u64, filename: String) -> Result<Part, UpstreamError> {
    Part::stream_with_length(Body::wrap_stream(read_exactly(file, len)), len)
        .file_name(filename)
        .mime_str("application/octet-stream")
        .map_err(|e| UpstreamError::Protocol {
            provider: PROVIDER,
            message: format!("could not build the multipart body: {e}"),
        })
}

/// `len` bytes of `file` as a stream of chunks; a file that ends early is an error
/// rather than a short body.
fn read_exactly(
    file: tokio::fs::File,
    len: u64,
) -> impl Stream<Item = io::Result<Vec<u8>>> + Send + 'static {
    stream::try_unfold((file, len), |(mut file, remaining)| async move {
        if remaining == 0 {
            return Ok(None);
        }
        let want = usize::try_from(remaining).map_or(READ_CHUNK, |r| r.min(READ_CHUNK));
        let mut buf = vec![0; want];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being uploaded",
            ));
        }
        buf.truncate(n);
        Ok(Some((buf, (file, remaining - n as u64))))
    })
}

/// A local read failure, naming the file; not retryable.
fn local_error(path: &Path, e: &io::Error) -> UpstreamError {
    UpstreamError::Local {
        provider: PROVIDER,
        message: format!("could not read {}: {e}", path.display()),
    }
}

/// The error envelope, tolerating a non-string `code` or a bare string `error`.
fn decode_api_error(body: &[u8]) -> Option<ApiError> {
    if let Ok(envelope) = serde_json::from_slice::<ErrorEnvelope>(body) {
        return Some(envelope.error);
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let text = |v: Option<&serde_json::Value>| match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match error {
        serde_json::Value::String(message) => Some(ApiError {
            message: message.clone(),
            ..ApiError::default()
        }),
        serde_json::Value::Object(_) => Some(ApiError {
            message: text(error.get("message")).unwrap_or_default(),
            kind: text(error.get("type")),
            param: text(error.get("param")),
            code: text(error.get("code")),
        }),
        _ => None,
    }
}

/// What an OpenAI refusal is about. A refused parameter the caller chose (the base
/// model, suffix, seed, hyperparameters, method, metadata) or a model OpenAI does not
/// offer is the caller's argument; anything else (a file's state, quota, billing) is a
/// precondition, unless the status says more (see [`refusal_of_status`]).
fn refusal(status: u16, code: Option<&str>, param: Option<&str>) -> Refusal {
    let callers = |p: &str| {
        matches!(
            p,
            "model" | "suffix" | "seed" | "hyperparameters" | "method" | "metadata"
        ) || p.starts_with("method.")
            || p.starts_with("hyperparameters.")
    };
    match refusal_of_status(status) {
        Refusal::Precondition if param.is_some_and(callers) => Refusal::Argument,
        Refusal::Precondition if code == Some("model_not_available") => Refusal::Argument,
        by_status => by_status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_are_normalised_and_unknown_ones_are_other() {
        let cases = [
            (Some("stop"), FinishReason::Stop),
            (Some("length"), FinishReason::Length),
            (Some("content_filter"), FinishReason::ContentFilter),
            (Some("tool_calls"), FinishReason::Other),
            (Some("function_call"), FinishReason::Other),
            // Anthropic's words mean nothing from OpenAI.
            (Some("end_turn"), FinishReason::Other),
            (Some("a_reason_from_next_year"), FinishReason::Other),
            (None, FinishReason::Other),
        ];
        for (raw, want) in cases {
            assert_eq!(finish_reason(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn refusals_are_classified_by_status_param_and_code() {
        let cases = [
            (400, None, Some("suffix"), Refusal::Argument),
            (400, None, Some("model"), Refusal::Argument),
            (400, None, Some("seed"), Refusal::Argument),
            (400, None, Some("metadata"), Refusal::Argument),
            (
                400,
                None,
                Some("hyperparameters.n_epochs"),
                Refusal::Argument,
            ),
            (
                400,
                None,
                Some("method.dpo.hyperparameters.beta"),
                Refusal::Argument,
            ),
            (400, Some("model_not_available"), None, Refusal::Argument),
            (
                400,
                Some("invalid_file_status"),
                Some("training_file"),
                Refusal::Precondition,
            ),
            (400, Some("quota_exceeded"), None, Refusal::Precondition),
            (400, None, Some("methodical"), Refusal::Precondition),
            (413, None, None, Refusal::Precondition),
            (408, None, None, Refusal::Precondition),
            (422, None, Some("training_file"), Refusal::Argument),
            // A conflict stays a conflict whatever parameter it names.
            (409, None, Some("model"), Refusal::Conflict),
            (409, Some("model_not_available"), None, Refusal::Conflict),
        ];
        for (status, code, param, want) in cases {
            assert_eq!(
                refusal(status, code, param),
                want,
                "{status} {code:?} {param:?}"
            );
        }
    }
}
