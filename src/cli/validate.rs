//! `finetune validate [FILE]`: the report on a dataset, for people or as JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use finetune_core::dataset::{self, Acceptance, Catalog, Input, Options, render};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The training dataset (JSONL).
    #[arg(default_value = "training-data.jsonl")]
    pub file: PathBuf,

    /// Base model: selects the encoding, training context and price.
    #[arg(long, default_value = "gpt-4o-2024-08-06")]
    pub model: String,

    /// Epochs to estimate for (1-50); default: OpenAI's automatic rule.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub epochs: Option<u32>,

    /// A validation dataset, checked too and for overlap with training.
    #[arg(long)]
    pub validation_file: Option<PathBuf>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// List at most this many problems (all are counted).
    #[arg(long, default_value_t = dataset::DEFAULT_MAX_PROBLEMS as u64, value_parser = clap::value_parser!(u64).range(1..=dataset::MAX_MAX_PROBLEMS as u64))]
    pub max_problems: u64,

    /// Flag intents with fewer examples than this.
    #[arg(long, default_value_t = dataset::DEFAULT_MIN_PER_INTENT)]
    pub min_per_intent: u64,

    /// Accept a problem you have reviewed, so it no longer blocks training: CODE:LINE for
    /// the training file, CODE:validation:LINE for the validation file (repeatable). It
    /// stays in the report, marked accepted. Only possible_secret can be accepted.
    #[arg(long = "accept", value_name = "CODE:LINE")]
    pub accept: Vec<Acceptance>,

    /// Model catalog replacing the shipped one (prices, contexts, encodings).
    #[arg(long, env = "FINETUNE_CATALOG")]
    pub catalog: Option<PathBuf>,
}

pub(super) fn run(args: &ValidateArgs) -> ExitCode {
    match validate(args) {
        Ok(has_errors) => {
            if has_errors {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(message) => {
            eprintln!("finetune validate: {message}");
            ExitCode::from(2)
        }
    }
}

fn open(path: &Path) -> Result<Input<'static>, String> {
    if path.is_dir() {
        return Err(format!(
            "{} is a directory, not a JSONL file",
            path.display()
        ));
    }
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok(Input {
        name: path.display().to_string(),
        reader: Box::new(file),
    })
}

/// Acceptances of the validation file need one.
pub(super) fn check_accepted(accept: &[Acceptance], has_validation: bool) -> Result<(), String> {
    match accept
        .iter()
        .find(|a| a.dataset == dataset::Role::Validation && !has_validation)
    {
        Some(a) => Err(format!(
            "--accept {a} names the validation file, but there is no --validation-file"
        )),
        None => Ok(()),
    }
}

fn validate(args: &ValidateArgs) -> Result<bool, String> {
    let catalog = match &args.catalog {
        Some(path) => Catalog::load(path).map_err(|e| e.to_string())?,
        None => Catalog::builtin(),
    };
    check_accepted(&args.accept, args.validation_file.is_some())?;
    let training = open(&args.file)?;
    let validation = args.validation_file.as_deref().map(open).transpose()?;
    let options = Options {
        model: args.model.clone(),
        epochs: args.epochs,
        max_problems: args.max_problems as usize,
        min_examples_per_intent: args.min_per_intent,
        accept: args.accept.clone(),
        ..Options::default()
    };
    let report =
        dataset::validate(training, validation, &options, &catalog).map_err(|e| e.to_string())?;
    if args.json {
        outln!("{}", render::to_json(&report));
    } else {
        outln!("{}", render::to_text(&report).trim_end());
    }
    Ok(report.has_errors())
}
