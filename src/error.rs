//! The one domain error and its one mapping to a gRPC status.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The ErrorInfo domain of every error this service returns.
pub const ERROR_DOMAIN: &str = "finetune.fileengine";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is wrong; `field` is its path in the request.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// Something the request names does not exist.
    #[error("{what} not found")]
    NotFound { what: String, reason: &'static str },
    /// Uploaded bytes did not match what the client announced.
    #[error("{0}")]
    DataLoss(String),
    /// A configured limit was exceeded; the message names it.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The RPC is part of the API but not built yet.
    #[error("{0}")]
    Unimplemented(String),
    /// Local I/O failed (the data directory, a dataset file).
    #[error("{0}")]
    Io(String),
    /// The service's configuration is invalid.
    #[error("configuration error: {0}")]
    Config(String),
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
            Error::NotFound { reason, .. } => reason,
            Error::DataLoss(_) => "UPLOAD_MISMATCH",
            Error::ResourceExhausted(_) => "LIMIT_EXCEEDED",
            Error::Unimplemented(_) => "NOT_IMPLEMENTED",
            Error::Io(_) => "STORAGE_ERROR",
            Error::Config(_) => "CONFIGURATION_ERROR",
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
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Io(_) | Error::Config(_) => Code::Internal,
        };
        let mut details = ErrorDetails::with_error_info(err.reason(), ERROR_DOMAIN, HashMap::new());
        if let Error::InvalidArgument { field, reason } = &err {
            details.add_bad_request_violation(field.clone(), reason.clone());
        }
        Status::with_error_details(code, err.to_string(), details)
    }
}
