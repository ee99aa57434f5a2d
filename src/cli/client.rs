//! What the client subcommands share: the connection and how errors are shown.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

use crate::pb::fine_tune_service_client::FineTuneServiceClient;

/// Where the service is: FINETUNE_ADDR, as `finetune serve` uses it.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The server's address (host:port or http://host:port).
    #[arg(
        long,
        env = "FINETUNE_ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub addr: String,
}

impl Connection {
    pub(crate) fn url(&self) -> String {
        if self.addr.starts_with("http://") || self.addr.starts_with("https://") {
            self.addr.clone()
        } else {
            format!("http://{}", self.addr)
        }
    }

    pub(crate) async fn connect(&self) -> Result<FineTuneServiceClient<Channel>, String> {
        let endpoint = Endpoint::from_shared(self.url())
            .map_err(|e| format!("bad --addr {}: {e}", self.addr))?
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.map_err(|e| {
            format!(
                "cannot reach the service at {} ({e}); is `finetune serve` running?",
                self.addr
            )
        })?;
        Ok(FineTuneServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }
}

/// A status as a person reads it: code, message, and the problems it carries.
pub(crate) fn describe(status: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", status.code(), status.message());
    let details = status.get_error_details();
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

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// `2026-11-26T02:15:45Z` from a protobuf timestamp.
pub(crate) fn time(ts: Option<&prost_types::Timestamp>) -> String {
    match ts.and_then(|t| u64::try_from(t.seconds).ok()) {
        Some(secs) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
                .to_string()
        }
        None => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_timestamps() {
        let ts = prost_types::Timestamp {
            seconds: 1_795_659_345,
            nanos: 0,
        };
        assert_eq!(super::time(Some(&ts)), "2026-11-26T02:15:45Z");
    }
}
