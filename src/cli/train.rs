//! `finetune train [FILE]`: validate, show the estimate, confirm, upload, start.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::client::{Connection, describe};
use super::words::count;
use crate::pb;
use finetune_core::dataset::{self, Acceptance, Catalog, Input, Options, render};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    Supervised,
    Dpo,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The training dataset (JSONL).
    #[arg(default_value = "training-data.jsonl")]
    pub file: PathBuf,
    /// A validation dataset.
    #[arg(long)]
    pub validation_file: Option<PathBuf>,
    /// Base model to fine-tune.
    #[arg(long, default_value = "gpt-4o-2024-08-06")]
    pub model: String,
    #[arg(long, value_enum, default_value = "supervised")]
    pub method: MethodArg,
    /// Epochs (1-50); default: OpenAI's automatic rule.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub epochs: Option<u32>,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub batch_size: Option<u32>,
    #[arg(long)]
    pub learning_rate_multiplier: Option<f64>,
    /// DPO beta, in (0, 2].
    #[arg(long)]
    pub beta: Option<f64>,
    /// Suffix of the fine-tuned model's name (up to 64 characters).
    #[arg(long)]
    pub suffix: Option<String>,
    #[arg(long)]
    pub seed: Option<i64>,
    /// Accept a problem you have reviewed, so it no longer blocks training: CODE:LINE for
    /// the training file, CODE:validation:LINE for the validation file (repeatable). It
    /// stays in the report, marked accepted. Only possible_secret can be accepted.
    #[arg(long = "accept", value_name = "CODE:LINE")]
    pub accept: Vec<Acceptance>,
    /// Idempotency key; repeating the command with the same id never starts a second
    /// job. Default: a new UUID, printed so a failed run can be retried with it.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Start without asking for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Follow the job until it ends (as `finetune watch`).
    #[arg(long)]
    pub watch: bool,
    /// Print the started job as JSON (implies --yes).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub(super) fn run(args: &TrainArgs) -> ExitCode {
    // Validate locally first: no server round trip to learn about a typo.
    let report = match local_report(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("finetune train: {e}");
            return ExitCode::from(2);
        }
    };
    if report.has_errors() {
        outln!("{}", render::to_text(&report).trim_end());
        eprintln!("finetune train: the dataset has errors; nothing was started");
        return ExitCode::from(1);
    }
    if !args.json {
        outln!(
            "{}: {}, {} tokens; {} ({}); estimated ${:.2} at ${:.2} per 1M training tokens",
            report.training.name,
            count(report.training.examples, "example", "examples"),
            render::thousands(report.training.tokens.total),
            count(report.epochs.into(), "epoch", "epochs"),
            report.epochs_explanation,
            report.estimated_cost_usd,
            report.price_per_million_usd
        );
    }
    if !args.json {
        for p in report.problems.iter().filter(|p| p.accepted) {
            let accepted = Acceptance {
                dataset: p.dataset,
                line: p.line,
                code: p.code,
            };
            outln!("accepted {accepted}: {}: {}", p.path, p.message);
        }
    }
    if !(args.yes || args.json) {
        match confirm(&format!(
            "Start training {} on OpenAI for about ${:.2}? [y/N] ",
            args.model, report.estimated_cost_usd
        )) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("finetune train: not started");
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("finetune train: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let request_id = args
        .request_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let runtime = match super::client::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("finetune train: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let job = match start(args, &request_id).await {
            Ok(job) => job,
            Err(e) => {
                eprintln!("finetune train: {e}\n(retry safely with --request-id {request_id})");
                return ExitCode::from(2);
            }
        };
        if args.json {
            outln!("{}", json!({"job": super::watch::job_json(&job)}));
        } else {
            outln!(
                "started job {} (OpenAI {}), request id {request_id}",
                job.id,
                job.upstream_id
            );
            outln!("follow it with: finetune watch {}", job.id);
        }
        if args.watch {
            super::watch::follow(&args.connection, &job.id, 0, args.json).await
        } else {
            ExitCode::SUCCESS
        }
    })
}

fn local_report(args: &TrainArgs) -> Result<dataset::Report, String> {
    let open = |p: &Path| -> Result<Input<'static>, String> {
        let f = std::fs::File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?;
        Ok(Input {
            name: p.display().to_string(),
            reader: Box::new(f),
        })
    };
    super::validate::check_accepted(&args.accept, args.validation_file.is_some())?;
    let training = open(&args.file)?;
    let validation = args.validation_file.as_deref().map(open).transpose()?;
    let options = Options {
        model: args.model.clone(),
        epochs: args.epochs,
        accept: args.accept.clone(),
        ..Options::default()
    };
    dataset::validate(training, validation, &options, &Catalog::builtin())
        .map_err(|e| e.to_string())
}

fn confirm(question: &str) -> Result<bool, String> {
    if !std::io::stdin().is_terminal() {
        return Err(
            "standard input is not a terminal: pass --yes to start without confirming".to_owned(),
        );
    }
    print!("{question}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// Uploads a file in 1 MiB chunks through UploadDataset; returns its dataset id.
async fn upload(client: &mut super::client::Client, path: &Path) -> Result<String, String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadDatasetRequest>(4);
    let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut first = true;
        loop {
            let mut chunk = vec![0u8; 1 << 20];
            let n = file
                .read(&mut chunk)
                .map_err(|e| format!("reading the dataset failed: {e}"))?;
            if n == 0 && !first {
                return Ok(());
            }
            chunk.truncate(n);
            let header = first.then(|| pb::UploadDatasetHeader {
                file_name: name.clone(),
                ..Default::default()
            });
            first = false;
            if tx
                .blocking_send(pb::UploadDatasetRequest { header, chunk })
                .is_err()
                || n == 0
            {
                return Ok(());
            }
        }
    });
    let response = client
        .upload_dataset(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reader.await.map_err(|e| e.to_string())??;
    Ok(response.map_err(|s| describe(&s))?.into_inner().dataset_id)
}

async fn start(args: &TrainArgs, request_id: &str) -> Result<pb::Job, String> {
    let mut client = args.connection.connect().await?;
    let training = upload(&mut client, &args.file).await?;
    let validation = match &args.validation_file {
        Some(p) => Some(upload(&mut client, p).await?),
        None => None,
    };
    let source = |id: String, path: &Path| pb::DatasetSource {
        source: Some(pb::dataset_source::Source::DatasetId(id)),
        file_name: path.display().to_string(),
    };
    let request = pb::StartTrainingRequest {
        request_id: request_id.to_owned(),
        training: Some(source(training, &args.file)),
        validation: validation
            .zip(args.validation_file.as_deref())
            .map(|(id, p)| source(id, p)),
        model: args.model.clone(),
        method: match args.method {
            MethodArg::Supervised => pb::TrainingMethod::Supervised,
            MethodArg::Dpo => pb::TrainingMethod::Dpo,
        } as i32,
        hyperparameters: Some(pb::Hyperparameters {
            n_epochs: args.epochs,
            batch_size: args.batch_size,
            learning_rate_multiplier: args.learning_rate_multiplier,
            beta: args.beta,
        }),
        suffix: args.suffix.clone().unwrap_or_default(),
        seed: args.seed,
        metadata: Default::default(),
        accepted_problems: args
            .accept
            .iter()
            .map(|a| pb::AcceptedProblem {
                dataset: match a.dataset {
                    dataset::Role::Training => pb::DatasetRole::Training,
                    dataset::Role::Validation => pb::DatasetRole::Validation,
                } as i32,
                line: a.line,
                code: a.code.as_str().to_owned(),
            })
            .collect(),
    };
    let response = client
        .start_training(request)
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    response
        .job
        .ok_or_else(|| "the server returned no job".to_owned())
}
