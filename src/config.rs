//! Configuration of `finetune serve`, read here and nowhere else: each setting comes from
//! its flag, else its environment variable, else the config file (`--config`, TOML), else
//! its default. The provider API keys come only from the environment (never a flag or a
//! file), and the adapters are handed plain settings: they read no environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, Args, Command, Parser, ValueEnum};
use serde::Serialize;
use toml::Spanned;

use finetune_core::ports::RetryPolicy;
use finetune_providers::OpenAiConfig;
use finetune_providers::anthropic::AnthropicConfig;

/// Largest gRPC message accepted or sent: bounds inline datasets.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Largest dataset UploadDataset stores (OpenAI's Uploads API takes up to 8 GB).
pub const DEFAULT_MAX_DATASET_BYTES: u64 = 2 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// When text logs are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
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

/// Settings of the server. Serialized, they are a config file (`--print-config`).
#[derive(Debug, Clone, Args, Serialize)]
#[command(after_help = AFTER_HELP)]
#[serde(rename_all = "kebab-case")]
pub struct ServeConfig {
    /// TOML file of settings: keys are the flags' names without the dashes
    /// (`data-dir = "/var/lib/finetune"`). A flag or variable beats the file; the file
    /// beats the defaults. An unknown key is an error.
    #[arg(long = "config", env = "FINETUNE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,

    /// Print the settings these flags, variables and file give, as a config file
    /// (without the API keys), and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,

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

    /// PostgreSQL database the replicas share (postgres://USER[:PASSWORD]@HOST[:PORT]/DB):
    /// the jobs, promotions, served records and datasets live there. Without it, the
    /// SQLite file (one process). The password is never printed or logged.
    #[arg(long, env = "FINETUNE_DATABASE_URL", conflicts_with = "database")]
    #[serde(serialize_with = "serialize_redacted_url")]
    pub database_url: Option<String>,

    /// With --database-url: the most connections this process opens to PostgreSQL.
    #[arg(long, env = "FINETUNE_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// With --database-url: seconds a query waits for a free connection before failing.
    #[arg(
        long,
        env = "FINETUNE_DB_ACQUIRE_TIMEOUT_SECONDS",
        default_value_t = 5.0
    )]
    pub db_acquire_timeout_seconds: f64,

    /// Seconds a job's polling lease outlives its last renewal [default: 2 poll
    /// intervals]. Each job is polled by the one process holding its lease; when that
    /// process dies, another takes the job over within this plus one poll interval.
    #[arg(long, env = "FINETUNE_LEASE_TTL_SECONDS")]
    pub lease_ttl_seconds: Option<f64>,

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

    /// OpenAI organization id, sent as OpenAI-Organization (OPENAI_ORGANIZATION is read
    /// too, when nothing else sets it).
    #[arg(long, env = "OPENAI_ORG_ID")]
    pub openai_organization: Option<String>,

    /// OpenAI project id, sent as OpenAI-Project.
    #[arg(long, env = "OPENAI_PROJECT_ID")]
    pub openai_project: Option<String>,

    /// Datasets larger than this many bytes go to OpenAI through the Uploads API, in parts.
    #[arg(
        long,
        env = "FINETUNE_UPLOAD_THRESHOLD_BYTES",
        default_value_t = OpenAiConfig::DEFAULT_UPLOAD_THRESHOLD_BYTES
    )]
    pub upload_threshold_bytes: u64,

    /// The OpenAI key: from OPENAI_API_KEY ([`ServeConfig::with_keys_from`]) or set by an
    /// embedder; never a flag or a file key.
    #[arg(skip)]
    #[serde(skip)]
    pub openai_api_key: Option<Secret>,

    /// Anthropic's API base URL [default: https://api.anthropic.com]. The key is read
    /// from ANTHROPIC_API_KEY only.
    #[arg(long, env = "ANTHROPIC_BASE_URL")]
    pub anthropic_base_url: Option<String>,

    /// The Anthropic key: from ANTHROPIC_API_KEY or set by an embedder; never a flag or a
    /// file key.
    #[arg(skip)]
    #[serde(skip)]
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
    #[serde(skip)]
    pub announce: bool,

    /// Address of the HTTP listener for Prometheus metrics (GET /metrics) and a health
    /// probe (GET /healthz); off when not given. Port 0 picks a free port (printed at start).
    #[arg(long, env = "FINETUNE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// A listener already bound for the metrics endpoint, used instead of metrics_addr
    /// (for embedders and tests that need the port before the server starts).
    #[arg(skip)]
    #[serde(skip)]
    pub metrics_listener: PreBound,
}

impl ServeConfig {
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }

    /// A configuration for tests and embedding: loopback, ephemeral port, given data dir.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            config_file: None,
            print_config: false,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            log_format: LogFormat::Text,
            log_color: LogColor::Auto,
            drain_seconds: 10,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_dataset_bytes: DEFAULT_MAX_DATASET_BYTES,
            catalog: None,
            database: None,
            database_url: None,
            db_max_connections: 10,
            db_acquire_timeout_seconds: 5.0,
            lease_ttl_seconds: None,
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
            openai_organization: None,
            openai_project: None,
            upload_threshold_bytes: OpenAiConfig::DEFAULT_UPLOAD_THRESHOLD_BYTES,
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
    pub fn check(&self) -> Result<(), finetune_core::Error> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(finetune_core::Error::Config(format!(
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
        positive(
            "--db-acquire-timeout-seconds",
            self.db_acquire_timeout_seconds,
        )?;
        if self.db_max_connections == 0 {
            return Err(finetune_core::Error::Config(
                "--db-max-connections must be at least 1".into(),
            ));
        }
        if let Some(ttl) = self.lease_ttl_seconds {
            positive("--lease-ttl-seconds", ttl)?;
            if Duration::from_secs_f64(ttl) <= self.poll_interval() {
                return Err(finetune_core::Error::Config(format!(
                    "--lease-ttl-seconds ({ttl}) must be longer than the poll interval ({} s), \
                     or leases lapse between polls and jobs change hands",
                    self.poll_interval().as_secs_f64()
                )));
            }
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(finetune_core::Error::Config(format!(
                    "--database-url must be a postgres:// URL, got {}",
                    redact_url(url)
                )));
            }
        }
        // clap ties the two flags together, but not values from the file: without this, a
        // file naming only one would serve plaintext.
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(finetune_core::Error::Config(
                "tls-cert and tls-key go together: give both, or neither for plaintext".into(),
            ));
        }
        Ok(())
    }

    /// The configured tokens (file and environment together); `None` when there are none,
    /// and then the server is open.
    pub fn tokens(&self) -> Result<Option<crate::auth::Tokens>, finetune_core::Error> {
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
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.upstream_max_retries,
            min_delay: Duration::from_millis(self.upstream_retry_delay_ms),
            max_delay: Duration::from_millis(
                self.upstream_retry_max_delay_ms
                    .max(self.upstream_retry_delay_ms),
            ),
            ..RetryPolicy::default()
        }
    }

    pub fn poll_interval(&self) -> Duration {
        let default = if self.emulator { 1.0 } else { 30.0 };
        Duration::from_secs_f64(self.poll_interval_seconds.unwrap_or(default))
    }

    /// The PostgreSQL pool's settings (with `--database-url`).
    pub fn pool_settings(&self) -> finetune_store_postgres::PoolSettings {
        finetune_store_postgres::PoolSettings {
            max_connections: self.db_max_connections,
            acquire_timeout: Duration::from_secs_f64(self.db_acquire_timeout_seconds),
        }
    }

    /// How long a polling lease outlives its last renewal: two poll intervals unless set.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl_seconds
            .map(Duration::from_secs_f64)
            .unwrap_or(self.poll_interval() * 2)
    }

    /// These settings with the provider API keys that `var` gives (`finetune serve` passes
    /// the process environment): OPENAI_API_KEY and ANTHROPIC_API_KEY, the only source of a
    /// key. A key an embedder set stays. OPENAI_ORGANIZATION, the other name of
    /// OPENAI_ORG_ID, fills the organization when nothing else did. Blank values are unset.
    pub fn with_keys_from(mut self, var: impl Fn(&str) -> Option<String>) -> ServeConfig {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        self.openai_api_key = self
            .openai_api_key
            .or_else(|| get("OPENAI_API_KEY").map(Secret));
        self.anthropic_api_key = self
            .anthropic_api_key
            .or_else(|| get("ANTHROPIC_API_KEY").map(Secret));
        self.openai_organization = self
            .openai_organization
            .or_else(|| get("OPENAI_ORGANIZATION"));
        self
    }

    /// [`ServeConfig::with_keys_from`] the process environment.
    pub fn with_process_keys(self) -> ServeConfig {
        self.with_keys_from(|name| std::env::var(name).ok())
    }

    /// The OpenAI adapter's settings, when there is an OpenAI key.
    pub fn openai(&self, retry: &RetryPolicy) -> Option<OpenAiConfig> {
        let key = self.openai_api_key.as_ref()?;
        let base_url = non_blank(&self.openai_base_url).unwrap_or(OpenAiConfig::DEFAULT_BASE_URL);
        Some(OpenAiConfig {
            organization: non_blank(&self.openai_organization).map(str::to_owned),
            project: non_blank(&self.openai_project).map(str::to_owned),
            upload_threshold_bytes: self.upload_threshold_bytes,
            retry: retry.clone(),
            ..OpenAiConfig::new(key.expose(), base_url.trim_end_matches('/'))
        })
    }

    /// The Anthropic adapter's settings, when there is an Anthropic key.
    pub fn anthropic(&self, retry: &RetryPolicy) -> Option<AnthropicConfig> {
        let key = self.anthropic_api_key.as_ref()?;
        let base_url =
            non_blank(&self.anthropic_base_url).unwrap_or(AnthropicConfig::DEFAULT_BASE_URL);
        Some(AnthropicConfig {
            retry: retry.clone(),
            ..AnthropicConfig::new(key.expose(), base_url)
        })
    }

    /// The settings as a config file (`--print-config`): every setting but the keys, which
    /// only the comment says are set.
    pub fn to_toml(&self) -> Result<String, finetune_core::Error> {
        let body = toml::to_string(self)
            .map_err(|e| finetune_core::Error::Config(format!("cannot write the settings: {e}")))?;
        let set = |key: &Option<Secret>| if key.is_some() { "set" } else { "not set" };
        Ok(format!(
            "# finetune serve settings. API keys never go in this file: OPENAI_API_KEY is {}, \
             ANTHROPIC_API_KEY is {}.\n{body}",
            set(&self.openai_api_key),
            set(&self.anthropic_api_key),
        ))
    }
}

fn non_blank(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The end of `finetune serve --help`: where settings come from.
const AFTER_HELP: &str = "Each setting comes from its flag, else its environment variable, \
else the --config file, else its default. Provider API keys are read only from the \
environment (OPENAI_API_KEY, ANTHROPIC_API_KEY): never from a flag or a file.";

/// The subcommand whose settings a config file may hold.
const SERVE: &str = "serve";

/// The process's command line as `P` (the `finetune` CLI): [`try_parse_from`], exiting
/// with clap's usage message (code 2) on an error.
pub fn parse<P: Parser>() -> P {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses `args` as `P`; `finetune serve`'s settings come from the flag, else the
/// environment variable, else the `--config` file, else the default.
///
/// clap gives flags → environment → defaults. The file's values become the defaults of a
/// second parse, so clap keeps that order and checks file values with the flags' parsers.
pub fn try_parse_from<P: Parser>(
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> Result<P, clap::Error> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = P::command().try_get_matches_from(&args)?;
    let file = matches
        .subcommand_matches(SERVE)
        .and_then(|serve| serve.get_one::<PathBuf>("config_file"));
    let Some(path) = file else {
        return P::from_arg_matches(&matches);
    };
    let command = P::command();
    let serve = command
        .find_subcommand(SERVE)
        .expect("the CLI has a serve command");
    let file = SettingsFile::read(path, serve)
        .map_err(|message| file_error(ErrorKind::InvalidValue, message))?;
    let mut command = command.mut_subcommand(SERVE, |serve| file.apply(serve));
    let matches = command
        .try_get_matches_from_mut(&args)
        .map_err(|e| file.blame(e))?;
    P::from_arg_matches(&matches)
}

/// The settings of a config file, checked against `finetune serve`'s flags.
struct SettingsFile {
    path: PathBuf,
    settings: Vec<FileSetting>,
}

struct FileSetting {
    /// The flag's clap id.
    id: String,
    /// The key as written: the flag's long name.
    key: String,
    values: Vec<String>,
    line: usize,
}

impl SettingsFile {
    /// Reads `path`; an error names the file, the line and the key.
    fn read(path: &Path, serve: &Command) -> Result<SettingsFile, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {shown}: {e}"))?;
        let table: BTreeMap<Spanned<String>, toml::Value> =
            toml::from_str(&text).map_err(|e| format!("config file {shown}: {e}"))?;
        // In the file's order, so the first wrong key reported is the first in the file.
        let mut entries: Vec<_> = table.into_iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut settings = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let line = text[..key.span().start].matches('\n').count() + 1;
            let key = key.into_inner();
            let at = format!("config file {shown}, line {line}");
            if key.replace('_', "-").contains("api-key") {
                return Err(format!(
                    "{at}: `{key}`: API keys are read only from the environment \
                     (OPENAI_API_KEY, ANTHROPIC_API_KEY), never from a file"
                ));
            }
            let arg = setting_named(serve, &key).ok_or_else(|| {
                let hint = setting_named(serve, &key.replace('_', "-"))
                    .map(|_| format!(" (did you mean `{}`?)", key.replace('_', "-")))
                    .unwrap_or_default();
                format!(
                    "{at}: unknown key `{key}`{hint}; the keys are the flags of \
                     `finetune serve --help` without the dashes"
                )
            })?;
            let values = match value {
                toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
                    items.into_iter().map(scalar).collect()
                }
                value => scalar(value).map(|v| vec![v]),
            }
            .map_err(|what| format!("{at}: `{key}` {what}"))?;
            settings.push(FileSetting {
                id: arg.get_id().to_string(),
                key,
                values,
                line,
            });
        }
        Ok(SettingsFile {
            path: path.to_owned(),
            settings,
        })
    }

    /// `serve` with the file's values as its defaults.
    fn apply(&self, mut serve: Command) -> Command {
        for s in &self.settings {
            serve = serve.mut_arg(&s.id, |arg| arg.default_values(s.values.clone()));
        }
        serve
    }

    /// `error` from the parse with the file's defaults; the first parse accepted the flags
    /// and variables, so a bad value here is the file's: say which line.
    fn blame(&self, error: clap::Error) -> clap::Error {
        let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
            return error;
        };
        let flag = arg.trim_start_matches('-').split([' ', '=']).next();
        let Some(s) = self.settings.iter().find(|s| Some(s.key.as_str()) == flag) else {
            return error;
        };
        let reason = std::error::Error::source(&error)
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let message = format!(
            "config file {}, line {}: invalid value {:?} for `{}`{reason}",
            self.path.display(),
            s.line,
            s.values.join(","),
            s.key
        );
        file_error(error.kind(), message)
    }
}

/// A usage error (exit code 2) about the config file: the message alone, since the
/// command's usage line would not help.
fn file_error(kind: ErrorKind, message: String) -> clap::Error {
    clap::Error::raw(kind, format!("{message}\n"))
}

/// The setting whose flag is `--{key}` (not `--config` itself, nor an action like --help).
fn setting_named<'a>(serve: &'a Command, key: &str) -> Option<&'a clap::Arg> {
    serve.get_arguments().find(|a| {
        a.get_long() == Some(key)
            && !matches!(a.get_id().as_str(), "config_file" | "print_config" | "help")
    })
}

/// A TOML value as the text a flag would take.
fn scalar(value: toml::Value) -> Result<String, &'static str> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("must be a string, a number or a boolean"),
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

/// `url` with its password replaced by `***`, for messages and `--print-config`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn serialize_redacted_url<S: serde::Serializer>(
    url: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_some(&redact_url(url)),
        None => serializer.serialize_none(),
    }
}
