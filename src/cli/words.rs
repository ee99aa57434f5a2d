//! How the command line words things for people: statuses in plain words, enum values as
//! users write them, counts with the plural that agrees.

use tonic::Code;
use tonic_types::StatusExt;

use crate::pb;

/// A status as a person reads it: what went wrong in plain words, the server's message, a
/// hint at the way out, and the problems the status carries.
pub(crate) fn describe(status: &tonic::Status) -> String {
    let details = status.get_error_details();
    let reason = details.error_info().map(|i| i.reason.as_str());
    let message = status.message();
    let mut out = match (status.code(), reason) {
        // The service's own argument errors already read "invalid <field>: <why>".
        (Code::InvalidArgument, Some("INVALID_ARGUMENT")) => message.to_owned(),
        // "job job-x not found" reads "not found: job job-x".
        (Code::NotFound, _) => format!(
            "not found: {}",
            message.strip_suffix(" not found").unwrap_or(message)
        ),
        (code, _) => format!("{}: {message}", code_words(code)),
    };
    if let Some(hint) = reason.and_then(hint) {
        out.push_str(&format!(" ({hint})"));
    }
    if let Some(retry) = details.retry_info().and_then(|r| r.retry_delay) {
        out.push_str(&format!(" (try again in {:.0?})", retry));
    }
    if let Some(pf) = details.precondition_failure() {
        for v in pf.violations.iter().take(20) {
            out.push_str(&format!(
                "\n  {}: error[{}]: {}",
                v.subject, v.r#type, v.description
            ));
        }
        if pf.violations.len() > 20 {
            out.push_str(&format!("\n  ... and {} more", pf.violations.len() - 20));
        }
    }
    if let Some(br) = details.bad_request() {
        for v in &br.field_violations {
            out.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    out
}

/// A gRPC code in plain words.
fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "error",
        Code::InvalidArgument => "invalid request",
        Code::DeadlineExceeded => "timed out",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "over a limit",
        Code::FailedPrecondition => "refused",
        Code::Aborted => "conflict",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not supported by this server",
        Code::Internal => "server error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data corrupted",
        Code::Unauthenticated => "not authenticated",
    }
}

/// The way out of an error, by its ErrorInfo reason, where the message does not say it.
fn hint(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "JOB_NOT_FOUND" => "no such job; `finetune jobs` lists them",
        "TIER_NOT_FOUND" => "no such tier; `finetune tiers` lists them",
        "TIER_HAS_NO_MODEL" => "`finetune promote` gives it one",
        "JOB_NOT_SUCCEEDED" => "only a succeeded job's model can be promoted",
        _ => return None,
    })
}

/// `1 request`, `2 requests`: the count and the noun that agrees with it.
/// Thousands are separated, as in every other figure the CLI prints (`1,234 requests`).
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    let noun = if n == 1 { one } else { many };
    format!("{} {noun}", finetune_core::dataset::render::thousands(n))
}

/// A proto enum value as users write it: `JOB_STATE_SUCCEEDED` is `succeeded`,
/// `PROVIDER_OPENAI` is `openai`; a value this version does not know is `unknown`.
pub(crate) fn user_name<E: ProtoEnum>(value: i32) -> String {
    E::try_from(value).map_or_else(
        |_| "unknown".to_owned(),
        |e| {
            let name = e.proto_name();
            name.strip_prefix(E::PREFIX)
                .unwrap_or(name)
                .to_ascii_lowercase()
        },
    )
}

/// A generated proto enum and the prefix its value names share (house style: every value
/// carries its enum's name).
pub(crate) trait ProtoEnum: TryFrom<i32> {
    const PREFIX: &'static str;
    fn proto_name(&self) -> &'static str;
}

macro_rules! proto_enums {
    ($($enum:ty => $prefix:literal),* $(,)?) => {$(
        impl ProtoEnum for $enum {
            const PREFIX: &'static str = $prefix;
            fn proto_name(&self) -> &'static str {
                self.as_str_name()
            }
        }
    )*};
}

proto_enums! {
    pb::JobState => "JOB_STATE_",
    pb::JobEventKind => "JOB_EVENT_KIND_",
    pb::TrainingMethod => "TRAINING_METHOD_",
    pb::Provider => "PROVIDER_",
    pb::DatasetRole => "DATASET_ROLE_",
    pb::FinishReason => "FINISH_REASON_",
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    fn status(code: Code, message: &str, reason: &str) -> tonic::Status {
        let details = ErrorDetails::with_error_info(reason, "finetune.fileengine", []);
        tonic::Status::with_error_details(code, message, details)
    }

    #[test]
    fn statuses_read_in_plain_words_with_the_way_out() {
        assert_eq!(
            describe(&status(
                Code::NotFound,
                "job job-doesnotexist not found",
                "JOB_NOT_FOUND"
            )),
            "not found: job job-doesnotexist (no such job; `finetune jobs` lists them)"
        );
        assert_eq!(
            describe(&status(
                Code::FailedPrecondition,
                "openai rejected the request: invalid training_file: file-abc",
                "UPSTREAM_REJECTED"
            )),
            "refused: openai rejected the request: invalid training_file: file-abc"
        );
        assert_eq!(
            describe(&status(
                Code::InvalidArgument,
                "invalid model: unknown",
                "INVALID_ARGUMENT"
            )),
            "invalid model: unknown"
        );
        assert_eq!(
            describe(&tonic::Status::unavailable("the server is shutting down")),
            "unavailable: the server is shutting down"
        );
        let described = describe(&tonic::Status::unauthenticated("missing token"));
        assert!(!described.contains("Unauthenticated"), "{described}");
    }

    #[test]
    fn enum_values_read_as_users_write_them() {
        let cases = [
            (
                user_name::<pb::JobState>(pb::JobState::Succeeded as i32),
                "succeeded",
            ),
            (
                user_name::<pb::JobState>(pb::JobState::ValidatingFiles as i32),
                "validating_files",
            ),
            (
                user_name::<pb::Provider>(pb::Provider::Openai as i32),
                "openai",
            ),
            (
                user_name::<pb::JobEventKind>(pb::JobEventKind::Checkpoint as i32),
                "checkpoint",
            ),
            (user_name::<pb::Provider>(99), "unknown"),
        ];
        for (name, want) in cases {
            assert_eq!(name, want);
        }
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1, "request", "requests"), "1 request");
        assert_eq!(count(2, "request", "requests"), "2 requests");
        assert_eq!(count(0, "example", "examples"), "0 examples");
        assert_eq!(count(1234, "request", "requests"), "1,234 requests");
    }
}
