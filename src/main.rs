//! `finetune`: parse the command line and run it.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    finetune::cli::run(finetune::cli::Cli::parse())
}
