//! The one domain error. Each kind has its ErrorInfo reason here ([`Error::reason`]); the
//! server maps it to a gRPC status, in one place (the service's `status` module).

use std::time::Duration;

/// Everything that can go wrong in the core, each kind with the reason a client branches on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A request field is wrong; `field` is its path in the request.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field's path in the request, e.g. `hyperparameters.n_epochs`.
        field: String,
        /// Why the value is refused.
        reason: String,
    },
    /// Something the request names does not exist; `what` says it in words (with a hint).
    #[error("{what} not found")]
    NotFound {
        /// What is missing, in words for the caller (with a hint).
        what: String,
        /// Which kind of thing, and its id: the ErrorInfo reason and metadata.
        missing: Missing,
    },
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
        /// What went wrong, in words for the caller.
        message: String,
        /// Which precondition failed (its ErrorInfo reason).
        reason: Precondition,
        /// Details for the `PreconditionFailure` detail, e.g. each dataset problem not accepted.
        violations: Vec<(String, String, String)>,
    },
    /// A request id was reused with different parameters; `job_id` holds it.
    #[error(
        "request_id {request_id} was already used for job {job_id} with different parameters; use a new request_id"
    )]
    AlreadyExists {
        /// The request id reused.
        request_id: String,
        /// The job created under it first.
        job_id: String,
    },
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
        /// What could not be confirmed, in words for the caller.
        message: String,
        /// How long to wait before calling again with the same request id.
        retry_after: std::time::Duration,
    },
    /// A provider call failed.
    #[error("{0}")]
    Upstream(UpstreamError),
}

/// Which precondition failed: callers branch on it, and its ErrorInfo reason
/// ([`Precondition::reason`]) is what a client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The dataset has errors that were not accepted.
    DatasetInvalid,
    /// The job has already reached a terminal state.
    JobFinished,
    /// The job is still being created upstream (it has no provider id yet).
    JobCreating,
    /// The job has not succeeded, so it has no model to promote.
    JobNotSucceeded,
    /// The tier's model is fixed in the tiers file, so it cannot be promoted to.
    TierPinned,
    /// The tier has neither a configured nor a promoted model.
    TierHasNoModel,
    /// The provider the request needs has no key configured.
    ProviderNotConfigured,
}

impl Precondition {
    /// The ErrorInfo reason of a FAILED_PRECONDITION for it.
    pub fn reason(self) -> &'static str {
        match self {
            Precondition::DatasetInvalid => "DATASET_INVALID",
            Precondition::JobFinished => "JOB_FINISHED",
            Precondition::JobCreating => "JOB_CREATING",
            Precondition::JobNotSucceeded => "JOB_NOT_SUCCEEDED",
            Precondition::TierPinned => "TIER_PINNED",
            Precondition::TierHasNoModel => "TIER_HAS_NO_MODEL",
            Precondition::ProviderNotConfigured => "PROVIDER_NOT_CONFIGURED",
        }
    }
}

/// What a NOT_FOUND names: its ErrorInfo reason and the metadata key holding the id, so a
/// client reads which one without parsing the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// A job id this service does not know.
    Job(String),
    /// A tier name not configured.
    Tier(String),
    /// A dataset id not in the dataset store.
    Dataset(String),
    /// A response id with no served record (for a rating).
    Response(String),
}

impl Missing {
    /// The ErrorInfo reason of a NOT_FOUND for it.
    pub fn reason(&self) -> &'static str {
        match self {
            Missing::Job(_) => "JOB_NOT_FOUND",
            Missing::Tier(_) => "TIER_NOT_FOUND",
            Missing::Dataset(_) => "DATASET_NOT_FOUND",
            Missing::Response(_) => "RESPONSE_NOT_FOUND",
        }
    }

    /// The ErrorInfo metadata entry: (key, the id as the request gave it).
    pub fn metadata(&self) -> (&'static str, &str) {
        match self {
            Missing::Job(id) => ("job_id", id),
            Missing::Tier(name) => ("tier", name),
            Missing::Dataset(id) => ("dataset_id", id),
            Missing::Response(id) => ("response_id", id),
        }
    }
}

impl Error {
    /// An [`Error::InvalidArgument`] for the request field `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The ErrorInfo reason: what a client branches on.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Error::NotFound { missing, .. } => missing.reason(),
            Error::DataLoss(_) => "UPLOAD_MISMATCH",
            Error::ResourceExhausted(_) => "LIMIT_EXCEEDED",
            Error::Io(_) => "STORAGE_ERROR",
            Error::Config(_) => "CONFIGURATION_ERROR",
            Error::FailedPrecondition { reason, .. } => reason.reason(),
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

/// A provider call that failed, classified for retries and for the gRPC mapping.
/// Messages are the provider's own (never containing our key) or our description.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// 429: slow down; `retry_after` from `retry-after-ms` / `Retry-After` when given.
    #[error("{provider} rate limit: {message}")]
    RateLimited {
        /// `openai` or `anthropic`.
        provider: &'static str,
        /// The provider's message.
        message: String,
        /// How long the provider asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// 5xx, 529, connection failures and timeouts: the provider is unavailable.
    #[error("{provider} unavailable: {message}")]
    Unavailable {
        /// `openai` or `anthropic`.
        provider: &'static str,
        /// The HTTP status, or None when no response came (connection failure, timeout).
        status: Option<u16>,
        /// The provider's message, or what failed on the way.
        message: String,
    },
    /// Other 4xx (400, 408, 409, 422, ...): the request was refused; `code`/`param` are the
    /// provider's, `refusal` what the adapter made of them.
    #[error("{provider} rejected the request: {message}")]
    Rejected {
        /// `openai` or `anthropic`.
        provider: &'static str,
        /// The HTTP status.
        status: u16,
        /// The provider's error code, e.g. `invalid_training_file`.
        code: Option<String>,
        /// The request parameter the provider named, e.g. `training_file`.
        param: Option<String>,
        /// What the refusal is about, for the status the server returns.
        refusal: Refusal,
        /// The provider's message.
        message: String,
    },
    /// 404.
    #[error("{provider}: {message}")]
    NotFound {
        /// `openai` or `anthropic`.
        provider: &'static str,
        /// The provider's message.
        message: String,
    },
    /// 401/403: the key is missing, wrong or lacks permission.
    #[error("{provider} authentication failed: {message}")]
    Auth {
        /// `openai` or `anthropic`.
        provider: &'static str,
        /// The HTTP status: 401 or 403.
        status: u16,
        /// The provider's message (never containing the key).
        message: String,
    },
    /// The response could not be decoded.
    #[error("{provider} sent an unreadable response: {message}")]
    Protocol {
        /// `openai` or `anthropic`.
        provider: &'static str,
        /// What could not be decoded, and why.
        message: String,
    },
    /// A local failure while preparing the call (for example reading the file to upload).
    #[error("{message}")]
    Local {
        /// The provider the call was for.
        provider: &'static str,
        /// What failed locally.
        message: String,
    },
    /// A create (job, file, upload) was sent but its answer was lost or unreadable: the
    /// connection broke or timed out after sending, or a 2xx body could not be decoded.
    /// The provider may have done the work; only a look-up can tell.
    #[error("{provider} may have done it, but its answer was lost: {message}")]
    Unconfirmed {
        /// `openai` or `anthropic`.
        provider: &'static str,
        /// What was sent, and how the answer was lost.
        message: String,
    },
}

/// What a provider's refusal was about, as the adapter that knows the provider's
/// parameters and error codes classified it; the server maps each to its own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Something the caller chose (a model, a suffix, hyperparameters) was refused.
    Argument,
    /// The provider's state does not allow the request (a file's state, quota, billing,
    /// a timeout), or the provider did not say which parameter it refused.
    Precondition,
    /// The request conflicts with a concurrent change (HTTP 409); trying again may work.
    Conflict,
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
    pub(crate) fn after_attempts(mut self, attempts: u32) -> UpstreamError {
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
