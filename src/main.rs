//! `finetune`: parse the command line and run it.

use std::process::ExitCode;

fn main() -> ExitCode {
    // The config module layers `serve`'s config file under the flags and variables.
    finetune::cli::run(finetune::config::parse::<finetune::cli::Cli>())
}
