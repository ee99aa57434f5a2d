//! The one domain error and its one mapping to a gRPC status.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use std::time::Duration;

/// The ErrorInfo domain of every error this service returns.
pub const ERROR_DOMAIN: &str = "finetune.fileengine";

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A request field is wrong; `field` is its path in the request.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// Something the request names does not exist; `what` says it in words (with a hint).
    #[error("{what} not found")]
    NotFound { what: String, missing: Missing },
    /// Uploaded bytes did not match what the client announced.
    #[error("{0}")]
    DataLoss(String),
    /// A configured limit was exceeded; the message names it.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Local I/O failed (the data directory, a dataset file).
    #[error("{0}")]
    Io(String),
    /// The service's configuration is invalid.
    #[error("configuration error: {0}")]
    Config(String),
    /// The request is valid but the state does not allow it (for example a dataset with
    /// errors, or cancelling a finished job). `violations` are (type, subject, description).
    #[error("{message}")]
    FailedPrecondition {
        message: String,
        reason: &'static str,
        violations: Vec<(String, String, String)>,
    },
    /// A request id was reused with different parameters; `job_id` holds it.
    #[error(
        "request_id {request_id} was already used for job {job_id} with different parameters; use a new request_id"
    )]
    AlreadyExists { request_id: String, job_id: String },
    /// The caller went away before the answer was complete.
    #[error("{0}")]
    Cancelled(String),
    /// The service cannot answer now (shutting down); the message says how to resume.
    #[error("{0}")]
    Unavailable(String),
    /// A create may have taken effect upstream but the service could not confirm it yet:
    /// the request id stays reserved, and a call again with the same request id (after
    /// `retry_after`) returns the job if it exists or creates it if it does not.
    #[error("{message}")]
    OutcomeUnknown {
        message: String,
        retry_after: std::time::Duration,
    },
    /// A provider call failed.
    #[error("{0}")]
    Upstream(UpstreamError),
}

/// What a NOT_FOUND names: its ErrorInfo reason and the metadata key holding the id, so a
/// client reads which one without parsing the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Job(String),
    Tier(String),
    Dataset(String),
    Response(String),
}

impl Missing {
    fn reason(&self) -> &'static str {
        match self {
            Missing::Job(_) => "JOB_NOT_FOUND",
            Missing::Tier(_) => "TIER_NOT_FOUND",
            Missing::Dataset(_) => "DATASET_NOT_FOUND",
            Missing::Response(_) => "RESPONSE_NOT_FOUND",
        }
    }

    /// The ErrorInfo metadata entry: (key, the id as the request gave it).
    fn metadata(&self) -> (&'static str, &str) {
        match self {
            Missing::Job(id) => ("job_id", id),
            Missing::Tier(name) => ("tier", name),
            Missing::Dataset(id) => ("dataset_id", id),
            Missing::Response(id) => ("response_id", id),
        }
    }
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Error::NotFound { missing, .. } => missing.reason(),
            Error::DataLoss(_) => "UPLOAD_MISMATCH",
            Error::ResourceExhausted(_) => "LIMIT_EXCEEDED",
            Error::Io(_) => "STORAGE_ERROR",
            Error::Config(_) => "CONFIGURATION_ERROR",
            Error::FailedPrecondition { reason, .. } => reason,
            Error::AlreadyExists { .. } => "REQUEST_ID_REUSED",
            Error::Unavailable(_) => "SHUTTING_DOWN",
            Error::Cancelled(_) => "CANCELLED",
            Error::OutcomeUnknown { .. } => "UPSTREAM_OUTCOME_UNKNOWN",
            Error::Upstream(e) => match e {
                UpstreamError::RateLimited { .. } => "UPSTREAM_RATE_LIMITED",
                UpstreamError::Unavailable { .. } => "UPSTREAM_UNAVAILABLE",
                UpstreamError::Rejected { .. } => "UPSTREAM_REJECTED",
                UpstreamError::NotFound { .. } => "UPSTREAM_NOT_FOUND",
                UpstreamError::Auth { .. } => "UPSTREAM_AUTH_FAILED",
                UpstreamError::Protocol { .. } => "UPSTREAM_PROTOCOL_ERROR",
                UpstreamError::Local { .. } => "LOCAL_IO_ERROR",
                UpstreamError::Unconfirmed { .. } => "UPSTREAM_OUTCOME_UNKNOWN",
            },
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let code = match &err {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::DataLoss(_) => Code::DataLoss,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Io(_) | Error::Config(_) => Code::Internal,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Cancelled(_) => Code::Cancelled,
            // Every SDK retries UNAVAILABLE with the same request id, which settles it.
            Error::OutcomeUnknown { .. } => Code::Unavailable,
            Error::Upstream(e) => upstream_code(e),
        };
        let mut metadata = HashMap::new();
        match &err {
            Error::Upstream(e) => upstream_metadata(e, &mut metadata),
            Error::NotFound { missing, .. } => {
                let (key, value) = missing.metadata();
                metadata.insert(key.to_owned(), value.to_owned());
            }
            Error::AlreadyExists { request_id, job_id } => {
                metadata.insert("request_id".to_owned(), request_id.clone());
                metadata.insert("job_id".to_owned(), job_id.clone());
            }
            _ => {}
        }
        let mut details = ErrorDetails::with_error_info(err.reason(), ERROR_DOMAIN, metadata);
        match &err {
            Error::InvalidArgument { field, reason } => {
                details.add_bad_request_violation(field.clone(), reason.clone());
            }
            Error::FailedPrecondition { violations, .. } if !violations.is_empty() => {
                for (kind, subject, description) in violations {
                    details.add_precondition_failure_violation(
                        kind.clone(),
                        subject.clone(),
                        description.clone(),
                    );
                }
            }
            Error::Upstream(UpstreamError::RateLimited { retry_after, .. }) => {
                details.set_retry_info(Some(
                    retry_after.unwrap_or(std::time::Duration::from_secs(1)),
                ));
            }
            Error::OutcomeUnknown { retry_after, .. } => {
                details.set_retry_info(Some(*retry_after));
            }
            _ => {}
        }
        Status::with_error_details(code, err.to_string(), details)
    }
}

/// The deliberate mapping of provider failures to gRPC codes.
fn upstream_code(e: &UpstreamError) -> Code {
    match e {
        UpstreamError::RateLimited { .. } => Code::ResourceExhausted,
        UpstreamError::Unavailable { .. } | UpstreamError::Unconfirmed { .. } => Code::Unavailable,
        // A refused parameter of the caller's (model, suffix, hyperparameters) is their
        // argument; anything else (file state, quota, conflicts) is a precondition.
        UpstreamError::Rejected { status: 422, .. } => Code::InvalidArgument,
        UpstreamError::Rejected { status: 409, .. } => Code::Aborted,
        UpstreamError::Rejected { param: Some(p), .. }
            if matches!(
                p.as_str(),
                "model" | "suffix" | "seed" | "hyperparameters" | "method" | "metadata"
            ) || p.starts_with("method.")
                || p.starts_with("hyperparameters.") =>
        {
            Code::InvalidArgument
        }
        UpstreamError::Rejected { code: Some(c), .. } if c == "model_not_available" => {
            Code::InvalidArgument
        }
        UpstreamError::Rejected { .. } => Code::FailedPrecondition,
        UpstreamError::NotFound { .. } => Code::NotFound,
        // The service's own key was refused: not the caller's credentials.
        UpstreamError::Auth { .. } => Code::FailedPrecondition,
        UpstreamError::Protocol { .. } | UpstreamError::Local { .. } => Code::Internal,
    }
}

fn upstream_metadata(e: &UpstreamError, metadata: &mut HashMap<String, String>) {
    metadata.insert("provider".to_owned(), e.provider().to_owned());
    if let UpstreamError::Rejected {
        code,
        param,
        status,
        ..
    } = e
    {
        metadata.insert("http_status".to_owned(), status.to_string());
        if let Some(c) = code {
            metadata.insert("upstream_code".to_owned(), c.clone());
        }
        if let Some(p) = param {
            metadata.insert("upstream_param".to_owned(), p.clone());
        }
    }
}

/// A provider call that failed, classified for retries and for the gRPC mapping.
/// Messages are the provider's own (never containing our key) or our description.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// 429: slow down; `retry_after` from `retry-after-ms` / `Retry-After` when given.
    #[error("{provider} rate limit: {message}")]
    RateLimited {
        provider: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    /// 5xx, 529, connection failures and timeouts: the provider is unavailable.
    #[error("{provider} unavailable: {message}")]
    Unavailable {
        provider: &'static str,
        status: Option<u16>,
        message: String,
    },
    /// Other 4xx (400, 408, 409, 422, ...): the request was refused; `code`/`param` are the provider's.
    #[error("{provider} rejected the request: {message}")]
    Rejected {
        provider: &'static str,
        status: u16,
        code: Option<String>,
        param: Option<String>,
        message: String,
    },
    /// 404.
    #[error("{provider}: {message}")]
    NotFound {
        provider: &'static str,
        message: String,
    },
    /// 401/403: the key is missing, wrong or lacks permission.
    #[error("{provider} authentication failed: {message}")]
    Auth {
        provider: &'static str,
        status: u16,
        message: String,
    },
    /// The response could not be decoded.
    #[error("{provider} sent an unreadable response: {message}")]
    Protocol {
        provider: &'static str,
        message: String,
    },
    /// A local failure while preparing the call (for example reading the file to upload).
    #[error("{message}")]
    Local {
        provider: &'static str,
        message: String,
    },
    /// A create (job, file, upload) was sent but its answer was lost or unreadable: the
    /// connection broke or timed out after sending, or a 2xx body could not be decoded.
    /// The provider may have done the work; only a look-up can tell.
    #[error("{provider} may have done it, but its answer was lost: {message}")]
    Unconfirmed {
        provider: &'static str,
        message: String,
    },
}

impl UpstreamError {
    /// Whether the official SDKs would retry the call (connection errors, 408, 409, 429, 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            UpstreamError::RateLimited { .. }
                | UpstreamError::Unavailable { .. }
                | UpstreamError::Unconfirmed { .. }
        ) || matches!(
            self,
            UpstreamError::Rejected {
                status: 408 | 409,
                ..
            }
        )
    }
}

impl UpstreamError {
    /// Whether a create that failed this way may still have taken effect upstream, so
    /// that it must be looked for before anything is released or created again: its
    /// answer was lost after sending ([`UpstreamError::Unconfirmed`]), or the provider
    /// failed while handling it (500, 502, 504). A refusal (4xx, 429), a 503 and a
    /// connection that never opened did nothing.
    pub fn may_have_taken_effect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unconfirmed { .. }
                | UpstreamError::Unavailable {
                    status: Some(500 | 502 | 504),
                    ..
                }
        )
    }

    /// The provider the error came from (`openai`, `anthropic`).
    pub fn provider(&self) -> &'static str {
        match self {
            UpstreamError::RateLimited { provider, .. }
            | UpstreamError::Unavailable { provider, .. }
            | UpstreamError::Rejected { provider, .. }
            | UpstreamError::NotFound { provider, .. }
            | UpstreamError::Auth { provider, .. }
            | UpstreamError::Protocol { provider, .. }
            | UpstreamError::Local { provider, .. }
            | UpstreamError::Unconfirmed { provider, .. } => provider,
        }
    }

    /// The error with "(gave up after N attempts)" added to its message when `attempts`
    /// is more than one, so callers know retries happened.
    pub fn after_attempts(mut self, attempts: u32) -> UpstreamError {
        if attempts > 1 {
            match &mut self {
                UpstreamError::RateLimited { message, .. }
                | UpstreamError::Unavailable { message, .. }
                | UpstreamError::Rejected { message, .. }
                | UpstreamError::NotFound { message, .. }
                | UpstreamError::Auth { message, .. }
                | UpstreamError::Protocol { message, .. }
                | UpstreamError::Local { message, .. }
                | UpstreamError::Unconfirmed { message, .. } => {
                    message.push_str(&format!(" (gave up after {attempts} attempts)"));
                }
            }
        }
        self
    }
}

impl From<UpstreamError> for Error {
    fn from(e: UpstreamError) -> Error {
        Error::Upstream(e)
    }
}
