//! Configuration of `finetune serve`: flags, then environment, then defaults.
//! Secrets (provider API keys, in later releases) come only from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Largest gRPC message accepted or sent: bounds inline datasets.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Largest dataset UploadDataset stores (OpenAI's Uploads API takes up to 8 GB).
pub const DEFAULT_MAX_DATASET_BYTES: u64 = 2 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// When text logs are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogColor {
    /// Only when stderr is a terminal (not when it is redirected to a file or a pipe).
    Auto,
    Always,
    Never,
}

impl LogColor {
    /// Whether to write ANSI colour codes to stderr.
    pub fn ansi(self) -> bool {
        match self {
            LogColor::Auto => std::io::IsTerminal::is_terminal(&std::io::stderr()),
            LogColor::Always => true,
            LogColor::Never => false,
        }
    }
}

/// A secret (an API key): its Debug output is `<redacted>`, so a logged or printed
/// configuration never shows it. `expose` is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

/// Settings of the server.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, env = "FINETUNE_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,

    /// Directory for uploaded datasets and, later, the job store.
    #[arg(long, env = "FINETUNE_DATA_DIR", default_value = "finetune-data")]
    pub data_dir: PathBuf,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "FINETUNE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Colour in text logs: auto (when stderr is a terminal), always or never.
    #[arg(long, env = "FINETUNE_LOG_COLOR", value_enum, default_value = "auto")]
    pub log_color: LogColor,

    /// Seconds to let in-flight calls finish after SIGINT/SIGTERM before closing them.
    #[arg(long, env = "FINETUNE_DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,

    /// Largest gRPC message in bytes (inline datasets must fit in one).
    #[arg(long, env = "FINETUNE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Largest dataset UploadDataset accepts, in bytes.
    #[arg(long, env = "FINETUNE_MAX_DATASET_BYTES", default_value_t = DEFAULT_MAX_DATASET_BYTES)]
    pub max_dataset_bytes: u64,

    /// Model catalog (prices, contexts) replacing the shipped data/models.toml.
    #[arg(long, env = "FINETUNE_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// SQLite file of the job store [default: DATA_DIR/finetune.db].
    #[arg(long, env = "FINETUNE_DATABASE")]
    pub database: Option<PathBuf>,

    /// Train against an in-process emulator of OpenAI's API: no key, no real training.
    #[arg(long, env = "FINETUNE_EMULATOR")]
    pub emulator: bool,

    /// With --emulator: how many times faster than real time emulated jobs run.
    #[arg(long, env = "FINETUNE_EMULATOR_TIME_SCALE", default_value_t = 20.0)]
    pub emulator_time_scale: f64,

    /// Seconds between a job's polls of OpenAI [default: 30, or 1 with --emulator].
    #[arg(long, env = "FINETUNE_POLL_INTERVAL_SECONDS")]
    pub poll_interval_seconds: Option<f64>,

    /// Seconds between rounds that settle StartTraining reservations left creating (a
    /// create whose outcome could not be confirmed): each adopts the job OpenAI holds for
    /// the request id or releases the reservation when OpenAI holds none. A round costs
    /// one store query, and one OpenAI look-up per such reservation.
    #[arg(
        long,
        env = "FINETUNE_RECONCILE_INTERVAL_SECONDS",
        default_value_t = 60.0
    )]
    pub reconcile_interval_seconds: f64,

    /// OpenAI's API base URL [default: https://api.openai.com/v1]. The key is read from
    /// OPENAI_API_KEY only.
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,

    /// The OpenAI key, for embedding and tests; the command line never takes it.
    #[arg(skip)]
    pub openai_api_key: Option<Secret>,

    /// Anthropic's API base URL [default: https://api.anthropic.com]. The key is read
    /// from ANTHROPIC_API_KEY only.
    #[arg(long, env = "ANTHROPIC_BASE_URL")]
    pub anthropic_base_url: Option<String>,

    /// The Anthropic key, for embedding and tests; the command line never takes it.
    #[arg(skip)]
    pub anthropic_api_key: Option<Secret>,

    /// Tiers file replacing the shipped data/tiers.toml.
    #[arg(long, env = "FINETUNE_TIERS")]
    pub tiers: Option<PathBuf>,

    /// Knowledge base file(s) injected as the system prompt of tiers that ask for it
    /// (repeat the flag, or separate paths with commas in the variable).
    #[arg(long, env = "FINETUNE_KNOWLEDGE", value_delimiter = ',')]
    pub knowledge: Vec<PathBuf>,

    /// Seconds of silence on a WatchJob stream before a heartbeat.
    #[arg(long, env = "FINETUNE_HEARTBEAT_SECONDS", default_value_t = 15.0)]
    pub heartbeat_seconds: f64,

    /// Calls one caller (a token's name, or an IP address without authentication) may
    /// have in flight; a streamed answer counts until it ends. WatchJob streams have their
    /// own limit.
    #[arg(long, env = "FINETUNE_MAX_CALLS_PER_CALLER", default_value_t = 256)]
    pub max_calls_per_caller: usize,

    /// WatchJob streams the server keeps open at once, over all callers.
    #[arg(long, env = "FINETUNE_MAX_WATCH_STREAMS", default_value_t = 10_000)]
    pub max_watch_streams: usize,

    /// A file of bearer tokens, one `NAME ROLES sha256:HEX` per line (`finetune token new`
    /// makes one). With tokens, every RPC but health and reflection needs one.
    #[arg(long, env = "FINETUNE_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// Token entries as in the file (`;` or newlines between entries). They hold hashes
    /// only, so they are safe on a command line.
    #[arg(long, env = "FINETUNE_AUTH_TOKENS")]
    pub auth_tokens: Option<String>,

    /// Serve a non-loopback address without tokens (anyone who can reach it may train and
    /// spend). Without this, such a server refuses to start.
    #[arg(long, env = "FINETUNE_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// PEM certificate chain for TLS (with --tls-key); without it the server speaks plaintext.
    #[arg(long, env = "FINETUNE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS (with --tls-cert).
    #[arg(long, env = "FINETUNE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Retries of a failed upstream call (connection errors, 408, 409, 429, 5xx, 529);
    /// 0 turns retries off. Job creation and uploads are retried only after looking for
    /// what the failed attempt may have made.
    #[arg(long, env = "FINETUNE_UPSTREAM_MAX_RETRIES", default_value_t = 2)]
    pub upstream_max_retries: usize,

    /// First retry delay in milliseconds; it doubles (with jitter) up to
    /// --upstream-retry-max-delay-ms. A provider's Retry-After of at most 60 s is used instead.
    #[arg(long, env = "FINETUNE_UPSTREAM_RETRY_DELAY_MS", default_value_t = 500)]
    pub upstream_retry_delay_ms: u64,

    /// Longest computed retry delay in milliseconds.
    #[arg(
        long,
        env = "FINETUNE_UPSTREAM_RETRY_MAX_DELAY_MS",
        default_value_t = 8000
    )]
    pub upstream_retry_max_delay_ms: u64,

    /// Whether to print the one "listening on" line on stdout (the CLI does; embedders
    /// that own stdout, such as the SDK test harness, do not).
    #[arg(skip = true)]
    pub announce: bool,

    /// Address of the HTTP listener for Prometheus metrics (GET /metrics) and a health
    /// probe (GET /healthz); off when not given. Port 0 picks a free port (printed at start).
    #[arg(long, env = "FINETUNE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// A listener already bound for the metrics endpoint, used instead of metrics_addr
    /// (for embedders and tests that need the port before the server starts).
    #[arg(skip)]
    pub metrics_listener: PreBound,
}

impl ServeConfig {
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }

    /// A configuration for tests and embedding: loopback, ephemeral port, given data dir.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            log_format: LogFormat::Text,
            log_color: LogColor::Auto,
            drain_seconds: 10,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_dataset_bytes: DEFAULT_MAX_DATASET_BYTES,
            catalog: None,
            database: None,
            emulator: false,
            emulator_time_scale: 20.0,
            poll_interval_seconds: None,
            reconcile_interval_seconds: 60.0,
            heartbeat_seconds: 15.0,
            announce: false,
            max_calls_per_caller: 256,
            max_watch_streams: 10_000,
            auth_tokens_file: None,
            auth_tokens: None,
            allow_unauthenticated: false,
            tls_cert: None,
            tls_key: None,
            upstream_max_retries: 2,
            upstream_retry_delay_ms: 500,
            upstream_retry_max_delay_ms: 8000,
            openai_base_url: None,
            openai_api_key: None,
            anthropic_base_url: None,
            anthropic_api_key: None,
            tiers: None,
            knowledge: Vec::new(),
            metrics_addr: None,
            metrics_listener: PreBound::default(),
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.database
            .clone()
            .unwrap_or_else(|| self.data_dir.join("finetune.db"))
    }

    /// Validates the settings that clap cannot.
    pub fn check(&self) -> Result<(), crate::Error> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(crate::Error::Config(format!(
                    "{name} must be a positive number of seconds, got {v}"
                )))
            }
        };
        positive("--heartbeat-seconds", self.heartbeat_seconds)?;
        positive(
            "--reconcile-interval-seconds",
            self.reconcile_interval_seconds,
        )?;
        positive("--emulator-time-scale", self.emulator_time_scale)?;
        if let Some(p) = self.poll_interval_seconds {
            positive("--poll-interval-seconds", p)?;
        }
        Ok(())
    }

    /// The configured tokens (file and environment together); `None` when there are none,
    /// and then the server is open.
    pub fn tokens(&self) -> Result<Option<crate::auth::Tokens>, crate::Error> {
        let mut tokens = crate::auth::Tokens::parse("", "")?;
        if let Some(path) = &self.auth_tokens_file {
            tokens = crate::auth::Tokens::load(path)?;
        }
        if let Some(text) = &self.auth_tokens {
            tokens = tokens.merge(crate::auth::Tokens::parse(text, "FINETUNE_AUTH_TOKENS")?)?;
        }
        Ok((!tokens.is_empty()).then_some(tokens))
    }

    /// The retry policy of every upstream call.
    pub fn retry_policy(&self) -> crate::upstream::RetryPolicy {
        crate::upstream::RetryPolicy {
            max_retries: self.upstream_max_retries,
            min_delay: Duration::from_millis(self.upstream_retry_delay_ms),
            max_delay: Duration::from_millis(
                self.upstream_retry_max_delay_ms
                    .max(self.upstream_retry_delay_ms),
            ),
            ..crate::upstream::RetryPolicy::default()
        }
    }

    pub fn poll_interval(&self) -> Duration {
        let default = if self.emulator { 1.0 } else { 30.0 };
        Duration::from_secs_f64(self.poll_interval_seconds.unwrap_or(default))
    }
}

/// A listener bound before the server starts, for embedders and tests that ask for
/// port 0 and need to know the port. Clones share the one listener; the server takes it.
#[derive(Debug, Clone, Default)]
pub struct PreBound(Arc<Mutex<Option<std::net::TcpListener>>>);

impl PreBound {
    pub fn new(listener: std::net::TcpListener) -> PreBound {
        PreBound(Arc::new(Mutex::new(Some(listener))))
    }

    pub(crate) fn take(&self) -> Option<std::net::TcpListener> {
        self.0.lock().expect("pre-bound listener").take()
    }
}
