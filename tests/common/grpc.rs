//! What gRPC calls in the tests share: a question, bearer tokens and error reasons.

use finetune::pb;
use tonic::metadata::MetadataValue;
use tonic_types::StatusExt;

/// `message` as a request carrying `token` as its bearer token.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

/// The `ErrorInfo` reason of `status`; `""` when it carries none.
pub fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// A CompleteRequest of one user message, `prompt`; nothing else set.
pub fn ask(prompt: &str) -> pb::CompleteRequest {
    pb::CompleteRequest {
        messages: vec![pb::ChatMessage {
            role: pb::ChatRole::User as i32,
            content: prompt.into(),
        }],
        ..Default::default()
    }
}
