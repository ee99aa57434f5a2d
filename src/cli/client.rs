//! What the client subcommands share: the connection and how errors are shown.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::pb::fine_tune_service_client::FineTuneServiceClient;

pub(crate) use super::words::describe;

/// Where the service is (FINETUNE_ADDR, as `finetune serve` uses it) and how to reach it.
#[derive(Clone, clap::Args)]
pub struct Connection {
    /// The server's address (host:port, http://host:port, or https://host:port for TLS).
    #[arg(
        long,
        env = "FINETUNE_ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub addr: String,
    /// The bearer token, when the server requires one (prefer the environment variable:
    /// a command line is visible to other users of the machine).
    #[arg(long, env = "FINETUNE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Use TLS (implied by an https:// address).
    #[arg(long, env = "FINETUNE_TLS", global = true)]
    pub tls: bool,
    /// A PEM CA certificate to trust for the server's TLS certificate (implies --tls);
    /// without it the public web roots are trusted.
    #[arg(long, env = "FINETUNE_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The client the subcommands use: the generated one, with the token on every call.
pub(crate) type Client = FineTuneServiceClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <token>` to every call when there is a token.
#[derive(Clone)]
pub(crate) struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Connection {
    fn tls(&self) -> bool {
        self.tls || self.ca_file.is_some() || self.addr.starts_with("https://")
    }

    pub(crate) fn url(&self) -> String {
        if self.addr.starts_with("http://") || self.addr.starts_with("https://") {
            self.addr.clone()
        } else if self.tls() {
            format!("https://{}", self.addr)
        } else {
            format!("http://{}", self.addr)
        }
    }

    pub(crate) async fn connect(&self) -> Result<Client, String> {
        let mut endpoint = Endpoint::from_shared(self.url())
            .map_err(|e| format!("bad --addr {}: {e}", self.addr))?
            .connect_timeout(Duration::from_secs(5));
        if self.tls() {
            let mut tls = ClientTlsConfig::new();
            match &self.ca_file {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?;
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                None => tls = tls.with_webpki_roots(),
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS for {}: {e}", self.addr))?;
        }
        let token = match self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            Some(t) => {
                let mut value = MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| "the token holds characters a header cannot carry".to_owned())?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let channel = endpoint.connect().await.map_err(|e| {
            format!(
                "cannot reach the service at {} ({e}); is `finetune serve` running?",
                self.addr
            )
        })?;
        Ok(
            FineTuneServiceClient::with_interceptor(channel, BearerToken(token))
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
    }
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
