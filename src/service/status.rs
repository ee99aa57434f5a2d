//! The one mapping of the domain error to a gRPC status: code, message, and the
//! google.rpc details (ErrorInfo with the reason and metadata, BadRequest,
//! PreconditionFailure, RetryInfo).

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use finetune_core::error::{Error, Refusal, UpstreamError};

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
        // The adapter decided what the refusal was about.
        UpstreamError::Rejected { refusal, .. } => match refusal {
            Refusal::Argument => Code::InvalidArgument,
            Refusal::Precondition => Code::FailedPrecondition,
            Refusal::Conflict => Code::Aborted,
        },
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use finetune_core::error::{Missing, Precondition};

    fn rejected(status: u16, refusal: Refusal) -> Error {
        Error::Upstream(UpstreamError::Rejected {
            provider: "openai",
            status,
            code: None,
            param: None,
            refusal,
            message: "no".to_owned(),
        })
    }

    fn precondition(reason: Precondition) -> Error {
        Error::FailedPrecondition {
            message: "not now".to_owned(),
            reason,
            violations: Vec::new(),
        }
    }

    /// Every kind of error, with the code and ErrorInfo reason clients rely on.
    #[test]
    fn every_error_maps_to_its_code_and_reason() {
        let provider = "openai";
        let message = || "m".to_owned();
        let cases: Vec<(Error, Code, &str)> = vec![
            (
                Error::invalid("tier", "bad"),
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            (
                Error::NotFound {
                    what: "job x".to_owned(),
                    missing: Missing::Job("x".to_owned()),
                },
                Code::NotFound,
                "JOB_NOT_FOUND",
            ),
            (
                Error::DataLoss(message()),
                Code::DataLoss,
                "UPLOAD_MISMATCH",
            ),
            (
                Error::ResourceExhausted(message()),
                Code::ResourceExhausted,
                "LIMIT_EXCEEDED",
            ),
            (Error::Io(message()), Code::Internal, "STORAGE_ERROR"),
            (
                Error::Config(message()),
                Code::Internal,
                "CONFIGURATION_ERROR",
            ),
            (
                precondition(Precondition::DatasetInvalid),
                Code::FailedPrecondition,
                "DATASET_INVALID",
            ),
            (
                precondition(Precondition::JobFinished),
                Code::FailedPrecondition,
                "JOB_FINISHED",
            ),
            (
                precondition(Precondition::JobCreating),
                Code::FailedPrecondition,
                "JOB_CREATING",
            ),
            (
                precondition(Precondition::JobNotSucceeded),
                Code::FailedPrecondition,
                "JOB_NOT_SUCCEEDED",
            ),
            (
                precondition(Precondition::TierPinned),
                Code::FailedPrecondition,
                "TIER_PINNED",
            ),
            (
                precondition(Precondition::TierHasNoModel),
                Code::FailedPrecondition,
                "TIER_HAS_NO_MODEL",
            ),
            (
                precondition(Precondition::ProviderNotConfigured),
                Code::FailedPrecondition,
                "PROVIDER_NOT_CONFIGURED",
            ),
            (
                Error::AlreadyExists {
                    request_id: "r".to_owned(),
                    job_id: "j".to_owned(),
                },
                Code::AlreadyExists,
                "REQUEST_ID_REUSED",
            ),
            (Error::Cancelled(message()), Code::Cancelled, "CANCELLED"),
            (
                Error::Unavailable(message()),
                Code::Unavailable,
                "SHUTTING_DOWN",
            ),
            (
                Error::OutcomeUnknown {
                    message: message(),
                    retry_after: Duration::from_secs(1),
                },
                Code::Unavailable,
                "UPSTREAM_OUTCOME_UNKNOWN",
            ),
            (
                Error::Upstream(UpstreamError::RateLimited {
                    provider,
                    message: message(),
                    retry_after: None,
                }),
                Code::ResourceExhausted,
                "UPSTREAM_RATE_LIMITED",
            ),
            (
                Error::Upstream(UpstreamError::Unavailable {
                    provider,
                    status: Some(503),
                    message: message(),
                }),
                Code::Unavailable,
                "UPSTREAM_UNAVAILABLE",
            ),
            (
                rejected(400, Refusal::Argument),
                Code::InvalidArgument,
                "UPSTREAM_REJECTED",
            ),
            (
                rejected(400, Refusal::Precondition),
                Code::FailedPrecondition,
                "UPSTREAM_REJECTED",
            ),
            (
                rejected(409, Refusal::Conflict),
                Code::Aborted,
                "UPSTREAM_REJECTED",
            ),
            (
                Error::Upstream(UpstreamError::NotFound {
                    provider,
                    message: message(),
                }),
                Code::NotFound,
                "UPSTREAM_NOT_FOUND",
            ),
            (
                Error::Upstream(UpstreamError::Auth {
                    provider,
                    status: 401,
                    message: message(),
                }),
                Code::FailedPrecondition,
                "UPSTREAM_AUTH_FAILED",
            ),
            (
                Error::Upstream(UpstreamError::Protocol {
                    provider,
                    message: message(),
                }),
                Code::Internal,
                "UPSTREAM_PROTOCOL_ERROR",
            ),
            (
                Error::Upstream(UpstreamError::Local {
                    provider,
                    message: message(),
                }),
                Code::Internal,
                "LOCAL_IO_ERROR",
            ),
            (
                Error::Upstream(UpstreamError::Unconfirmed {
                    provider,
                    message: message(),
                }),
                Code::Unavailable,
                "UPSTREAM_OUTCOME_UNKNOWN",
            ),
        ];
        for (err, code, reason) in cases {
            let described = format!("{err:?}");
            let got = status(err);
            assert_eq!(got.code(), code, "{described}");
            let info = got
                .get_details_error_info()
                .expect("every status has ErrorInfo");
            assert_eq!(info.reason, reason, "{described}");
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
    }

    /// The status carries the refusal's HTTP status and the provider's code and param,
    /// whatever the adapter made of them.
    #[test]
    fn a_refusal_keeps_the_providers_words_in_metadata() {
        let got = status(Error::Upstream(UpstreamError::Rejected {
            provider: "openai",
            status: 400,
            code: Some("invalid_value".to_owned()),
            param: Some("suffix".to_owned()),
            refusal: Refusal::Argument,
            message: "bad suffix".to_owned(),
        }));
        let info = got.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.metadata["provider"], "openai");
        assert_eq!(info.metadata["http_status"], "400");
        assert_eq!(info.metadata["upstream_code"], "invalid_value");
        assert_eq!(info.metadata["upstream_param"], "suffix");
    }
}
