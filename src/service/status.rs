//! The one mapping of the domain error to a gRPC status: code, message, and the
//! google.rpc details (ErrorInfo with the reason and metadata, BadRequest,
//! PreconditionFailure, RetryInfo).

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{Error, UpstreamError};

/// The ErrorInfo domain of every error this service returns.
pub const ERROR_DOMAIN: &str = "finetune.fileengine";

/// The status a handler returns for `err`.
pub fn status(err: Error) -> Status {
    {
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

/// `.into_status()` on a domain error, where `?` cannot convert it (the error and
/// `Status` are both other crates' types).
pub trait IntoStatus {
    fn into_status(self) -> Status;
}

impl IntoStatus for Error {
    fn into_status(self) -> Status {
        status(self)
    }
}
