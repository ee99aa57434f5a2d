//! The `finetune` command line: `serve` runs the service, `validate` checks a dataset
//! in-process without a server.

/// `println!` that ends the process quietly when stdout is closed (`finetune watch | head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod client;
mod cost;
mod jobs;
mod serve_cmds;
mod train;
mod validate;
mod watch;
mod words;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{LogColor, LogFormat, ServeConfig};

#[derive(Debug, Parser)]
#[command(
    name = "finetune",
    version,
    about = "File Engine's fine-tuning pipeline: validate, train, watch, test"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service.
    Serve(Box<ServeConfig>),
    /// Check a JSONL dataset and estimate its training cost (offline, no server).
    Validate(validate::ValidateArgs),
    /// Validate, confirm and start a training job on the service.
    Train(train::TrainArgs),
    /// Follow a job live (default: the latest); exit 0 when it succeeds.
    Watch(watch::WatchArgs),
    /// List jobs, newest first.
    Jobs(jobs::JobsArgs),
    /// Cancel an unfinished job.
    Cancel(jobs::CancelArgs),
    /// Stream an answer from a tier (default fast) or a model, then its cost and latency.
    Test(serve_cmds::TestArgs),
    /// Make a succeeded job's model (or a named model) the one a tier serves.
    Promote(serve_cmds::PromoteArgs),
    /// List the tiers and the model each serves.
    Tiers(serve_cmds::TiersArgs),
    /// The A/B arms and tiers side by side: requests, errors, latency, cost, feedback.
    Ab(serve_cmds::StatsArgs),
    /// Cost per request by tier from what was served, and what drives the difference;
    /// `--models`: each fine-tunable model's training and serving cost for a dataset.
    Cost(cost::CostArgs),
    /// Run the emulator of OpenAI's and Anthropic's APIs on its own (SDKs, offline work).
    Emulator(EmulatorArgs),
    /// Apply the job store's pending migrations (before a rolling upgrade of replicas:
    /// run the new release's `finetune migrate`, then replace the replicas one by one).
    Migrate(MigrateArgs),
    /// Make bearer tokens for the server's --auth-tokens-file.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token (give it to the caller) and the line for the tokens file
    /// (it holds only the token's SHA-256).
    New(TokenArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The caller's name, as logged and shown in errors (letters, digits, - _ .).
    #[arg(long)]
    pub name: String,
    /// Comma-separated roles: read (validate, get, list, watch), train (start, cancel,
    /// promote), complete (complete, stream, feedback).
    #[arg(long, value_delimiter = ',', default_value = "read")]
    pub roles: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, env = "FINETUNE_EMULATOR_ADDR", default_value = "127.0.0.1:8089")]
    pub addr: std::net::SocketAddr,
    /// How many times faster than real time emulated jobs run.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Accept only this API key (default: any non-empty bearer token).
    #[arg(long, env = "FINETUNE_EMULATOR_API_KEY")]
    pub api_key: Option<String>,
    /// Colour in logs: auto (when stderr is a terminal), always or never.
    #[arg(long, env = "FINETUNE_LOG_COLOR", value_enum, default_value = "auto")]
    pub log_color: LogColor,
    /// Keep files, jobs and models here across restarts (default: in memory only).
    #[arg(long, env = "FINETUNE_EMULATOR_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database the replicas share (postgres://...); its password is never
    /// printed.
    #[arg(
        long,
        env = "FINETUNE_DATABASE_URL",
        required_unless_present = "database"
    )]
    pub database_url: Option<String>,
    /// A SQLite job store file instead (`finetune serve` migrates its own at start).
    #[arg(long, env = "FINETUNE_DATABASE", conflicts_with = "database_url")]
    pub database: Option<std::path::PathBuf>,
}

/// Runs the CLI; the exit code is 0 on success, 1 when a dataset has errors, 2 on usage errors.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Validate(args) => validate::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Watch(args) => watch::run(&args),
        Command::Jobs(args) => jobs::list(&args),
        Command::Cancel(args) => jobs::cancel(&args),
        Command::Test(args) => serve_cmds::test(&args),
        Command::Promote(args) => serve_cmds::promote(&args),
        Command::Tiers(args) => serve_cmds::tiers(&args),
        Command::Ab(args) => serve_cmds::ab(&args),
        Command::Cost(args) => cost::run(&args),
        Command::Emulator(args) => emulator(args),
        Command::Migrate(args) => migrate(&args),
        Command::Token(TokenCommand::New(args)) => new_token(&args),
    }
}

fn new_token(args: &TokenArgs) -> ExitCode {
    let mut roles = Vec::new();
    for r in &args.roles {
        match r.trim() {
            "read" => roles.push(crate::auth::Role::Read),
            "train" => roles.push(crate::auth::Role::Train),
            "complete" => roles.push(crate::auth::Role::Complete),
            other => {
                eprintln!(
                    "finetune token new: unknown role {other:?}; roles are read, train, complete"
                );
                return ExitCode::from(2);
            }
        }
    }
    let (token, line) = crate::auth::new_token(&args.name, &roles);
    // Check the line as the server will read it (the name's characters above all).
    if let Err(e) = crate::auth::Tokens::parse(&line, "--name") {
        eprintln!("finetune token new: {e}");
        return ExitCode::from(2);
    }
    outln!("token: {token}");
    outln!("tokens-file line: {line}");
    eprintln!(
        "Give the token to the caller (as FINETUNE_TOKEN, or `authorization: Bearer <token>`); \
         add the line to the server's --auth-tokens-file. The token is not stored anywhere."
    );
    ExitCode::SUCCESS
}

fn migrate(args: &MigrateArgs) -> ExitCode {
    let runtime = match client::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("finetune: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match (&args.database_url, &args.database) {
            (Some(url), _) => {
                let migrated = finetune_store_postgres::PgStore::migrate(url).await?;
                Ok(format!(
                    "{}: schema version {} -> {}",
                    crate::config::redact_url(url),
                    migrated.from,
                    migrated.to
                ))
            }
            (None, Some(path)) => finetune_store_sqlite::SqliteStore::open(path)
                .await
                .map(|_| format!("{}: migrated", path.display())),
            (None, None) => unreachable!("clap requires one"),
        }
    });
    match outcome {
        Ok(line) => {
            outln!("finetune migrate: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("finetune migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "emulator")]
fn emulator(args: EmulatorArgs) -> ExitCode {
    init_tracing(LogFormat::Text, args.log_color);
    if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
        eprintln!("finetune emulator: --time-scale must be a positive number");
        return ExitCode::from(2);
    }
    let config = finetune_emulator::EmulatorConfig {
        time_scale: args.time_scale,
        api_key: args.api_key,
        data_dir: args.data_dir,
        ..finetune_emulator::EmulatorConfig::default()
    };
    let runtime = match client::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("finetune: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(finetune_emulator::run_standalone(config, args.addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("finetune emulator: {e}");
            ExitCode::from(2)
        }
    }
}

/// A build without the `emulator` feature has no emulator to run: a usage error.
#[cfg(not(feature = "emulator"))]
fn emulator(_args: EmulatorArgs) -> ExitCode {
    eprintln!("finetune emulator: {}", crate::server::NO_EMULATOR);
    ExitCode::from(2)
}

fn serve(config: ServeConfig) -> ExitCode {
    let config = config.with_process_keys();
    if config.print_config {
        return match config.to_toml() {
            Ok(text) => {
                outln!("{}", text.trim_end());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("finetune serve: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing(config.log_format, config.log_color);
    if cfg!(not(feature = "emulator")) && config.emulator {
        eprintln!("finetune serve: {}", crate::server::NO_EMULATOR);
        return ExitCode::from(2);
    }
    let runtime = match client::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("finetune: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = crate::server::shutdown_signal();
        let listener = match tokio::net::TcpListener::bind(config.addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("finetune: cannot listen on {}: {e}", config.addr);
                return ExitCode::from(2);
            }
        };
        match crate::server::serve(config, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("finetune: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn init_tracing(format: LogFormat, color: LogColor) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color.ansi());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
