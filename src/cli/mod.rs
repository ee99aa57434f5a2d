//! The `finetune` command line: `serve` runs the service, `validate` checks a dataset
//! in-process without a server.

mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{LogFormat, ServeConfig};

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
    Serve(ServeConfig),
    /// Check a JSONL dataset and estimate its training cost (offline, no server).
    Validate(validate::ValidateArgs),
}

/// Runs the CLI; the exit code is 0 on success, 1 when a dataset has errors, 2 on usage errors.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(config) => serve(config),
        Command::Validate(args) => validate::run(&args),
    }
}

fn serve(config: ServeConfig) -> ExitCode {
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("finetune: cannot start the runtime: {e}");
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

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
