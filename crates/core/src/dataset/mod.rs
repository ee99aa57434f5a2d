//! The validation engine: format checks, exact token counts, epochs and cost for a
//! fine-tuning dataset. Pure: it reads bytes and returns a report, shared by the
//! server and the CLI.

mod catalog;
mod check;
mod json;
mod problem;
pub mod render;
mod scan;
mod secrets;
mod stats;
mod tokens;

use std::collections::BTreeMap;
use std::io::Read;

use serde::Serialize;

pub use catalog::{Catalog, InferencePrice, ModelInfo, Resolved, TokenPrices};
pub use problem::{Acceptance, Code, Problem, Role, Severity};
pub use secrets::find as find_secret;
pub use stats::Distribution;
use stats::auto_epochs;
pub use tokens::{Counter, Encoding};

use check::LineFormat;
use scan::{FileScan, ScanContext, Sink, scan};

use crate::error::Error;

/// Minimum training examples OpenAI accepts.
const MIN_EXAMPLES: u64 = 10;
/// Fewer training examples than this draws a warning (the pipeline advises 50-100+).
const ADVISED_EXAMPLES: u64 = 50;
/// Default and largest number of listed problems.
pub const DEFAULT_MAX_PROBLEMS: usize = 1000;
/// The most problems a caller may ask to list.
pub const MAX_MAX_PROBLEMS: usize = 100_000;
/// Default minimum examples per intent.
pub const DEFAULT_MIN_PER_INTENT: u64 = 3;

/// How to validate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base model; empty means the catalog's default.
    pub model: String,
    /// Epochs to estimate for; None applies OpenAI's automatic rule.
    pub epochs: Option<u32>,
    /// How many problems to list at most (every one is still counted by code).
    pub max_problems: usize,
    /// Intents with fewer examples than this draw a warning.
    pub min_examples_per_intent: u64,
    /// Worker threads for parsing and tokenizing.
    pub threads: usize,
    /// Problems the caller accepts: listed, marked accepted, not counted as errors.
    pub accept: Vec<Acceptance>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            model: String::new(),
            epochs: None,
            max_problems: DEFAULT_MAX_PROBLEMS,
            min_examples_per_intent: DEFAULT_MIN_PER_INTENT,
            threads: std::thread::available_parallelism().map_or(2, usize::from),
            accept: Vec::new(),
        }
    }
}

/// A dataset to read: a name for messages and its bytes.
pub struct Input<'a> {
    /// The name problems and the report use for it (e.g. the file name).
    pub name: String,
    /// Its bytes, read once, front to back.
    pub reader: Box<dyn Read + Send + 'a>,
}

impl<'a> Input<'a> {
    /// An input over bytes already in memory.
    pub fn from_bytes(name: impl Into<String>, bytes: &'a [u8]) -> Input<'a> {
        Input {
            name: name.into(),
            reader: Box::new(bytes),
        }
    }
}

/// The training-file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Supervised chat examples (`messages`).
    Chat,
    /// Preference pairs for DPO (`input`, `preferred_output`, `non_preferred_output`).
    Preference,
    /// The legacy `prompt`/`completion` format, which chat models refuse.
    Completion,
}

impl Format {
    /// A short human-readable name of the format, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Format::Chat => "supervised chat",
            Format::Preference => "preference (DPO)",
            Format::Completion => "legacy prompt/completion",
        }
    }
}

/// Token figures of one file.
#[derive(Debug, Clone, Serialize)]
pub struct TokenSummary {
    /// The tokenizer used (`o200k_base` or `cl100k_base`).
    pub encoding: &'static str,
    /// Tokens of every example together.
    pub total: u64,
    /// Tokens per example.
    pub per_example: Distribution,
    /// Tokens of assistant messages (the ones trained on), all examples together.
    pub assistant_total: u64,
    /// Assistant tokens per example.
    pub assistant_per_example: Distribution,
    /// Messages per example.
    pub messages_per_example: Distribution,
    /// Examples longer than the training context (truncated in training).
    pub examples_over_context: u64,
}

/// One validated file.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    /// The file's name as given.
    pub name: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Lines read.
    pub lines: u64,
    /// Examples parsed.
    pub examples: u64,
    /// Its token figures.
    pub tokens: TokenSummary,
}

/// A row of the intent coverage table.
#[derive(Debug, Clone, Serialize)]
pub struct IntentRow {
    /// Empty for untagged examples.
    pub intent: String,
    /// Examples tagged with this intent.
    pub examples: u64,
    /// Whether that is fewer than the minimum per intent.
    pub below_minimum: bool,
}

/// The complete result of a validation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The format of the training file's examples; None when no line had a recognisable one.
    pub format: Option<Format>,
    /// The model the estimate is for (the catalog's default when none was asked).
    pub model: String,
    /// Whether the catalog lists that model (else defaults were assumed).
    pub model_known: bool,
    /// The training file's figures.
    pub training: FileSummary,
    /// The validation file's figures, if one was given.
    pub validation: Option<FileSummary>,
    /// Whole-dataset findings (line 0) first, then by file (training first) and line.
    pub problems: Vec<Problem>,
    /// Whether problems were left out of `problems` because of `max_problems`.
    pub problems_truncated: bool,
    /// The limit `problems` was cut at.
    pub max_problems: usize,
    /// Errors not accepted: training is refused unless this is 0.
    pub error_count: u64,
    /// Warnings: they never block training.
    pub warning_count: u64,
    /// Errors the caller accepted (in no other count but `counts_by_code`).
    pub accepted_count: u64,
    /// Every problem counted by code, listed or not.
    pub counts_by_code: BTreeMap<&'static str, u64>,
    /// The model's training context: tokens per example beyond it are not billed.
    pub training_context_tokens: u64,
    /// Epochs the estimate is for.
    pub epochs: u32,
    /// Whether `epochs` came from OpenAI's automatic rule rather than the caller.
    pub epochs_auto: bool,
    /// How `epochs` was chosen, in words.
    pub epochs_explanation: String,
    /// Tokens OpenAI would bill: each example capped at the context, times the epochs.
    pub billed_tokens: u64,
    /// The model's training price, USD per 1M tokens (0 when unknown).
    pub price_per_million_usd: f64,
    /// `billed_tokens` at that price, in USD.
    pub estimated_cost_usd: f64,
    /// The minimum examples per intent used for the intent table.
    pub min_examples_per_intent: u64,
    /// Examples per intent, for the coverage table.
    pub intents: Vec<IntentRow>,
}

impl Report {
    /// Whether errors remain that the caller did not accept (training would be refused).
    pub fn has_errors(&self) -> bool {
        self.error_count > 0
    }
}

/// Validates a training file and an optional validation file.
///
/// Only I/O errors and invalid options fail; every problem with the content is in the report.
pub fn validate(
    training: Input<'_>,
    validation: Option<Input<'_>>,
    options: &Options,
    catalog: &Catalog,
) -> Result<Report, Error> {
    if let Some(e) = options.epochs {
        if !(1..=50).contains(&e) {
            return Err(Error::invalid(
                "epochs",
                format!("must be between 1 and 50, got {e}"),
            ));
        }
    }
    let model = catalog.resolve(&options.model);
    let max_problems = options.max_problems.clamp(1, MAX_MAX_PROBLEMS);
    let mut line_sink = Sink::new(max_problems);
    line_sink.accept = options.accept.clone();
    let encoding = model.info.encoding;
    let context_tokens = model.info.training_context;

    let Input {
        name: training_name,
        reader: mut training_reader,
    } = training;
    let ctx = ScanContext {
        role: Role::Training,
        encoding,
        context_tokens,
        threads: options.threads,
        training_hashes: None,
    };
    let mut train = scan(&mut training_reader, &ctx, &mut line_sink)?;

    let validation = match validation {
        Some(Input { name, mut reader }) => {
            let ctx = ScanContext {
                role: Role::Validation,
                encoding,
                context_tokens,
                threads: options.threads,
                training_hashes: Some(&train.hashes),
            };
            let scanned = scan(&mut reader, &ctx, &mut line_sink)?;
            Some((name, scanned))
        }
        None => None,
    };

    let n = train.tokens.len() as u64;
    let mut dataset_sink = Sink::new(max_problems);
    let intents = whole_dataset_findings(&mut dataset_sink, &model, &train, options);
    let (epochs, epochs_auto, epochs_explanation) = match options.epochs {
        Some(e) => (e, false, format!("requested: {e}")),
        None => {
            let (e, why) = auto_epochs(n);
            (e, true, why)
        }
    };
    let billed_per_epoch: u64 = train.tokens.iter().map(|&t| t.min(context_tokens)).sum();
    let billed_tokens = billed_per_epoch * u64::from(epochs);
    let price = model.info.training_usd_per_1m;

    let counts_total = merge_counts(&dataset_sink, &line_sink);
    let error_count = dataset_sink.count(Severity::Error) + line_sink.count(Severity::Error);
    let warning_count = dataset_sink.count(Severity::Warning) + line_sink.count(Severity::Warning);
    let accepted_count = line_sink.accepted;
    let mut problems = dataset_sink.listed;
    let mut truncated = line_sink.truncated || dataset_sink.truncated;
    problems.extend(line_sink.listed);
    if problems.len() > max_problems {
        problems.truncate(max_problems);
        truncated = true;
    }

    let format = train.format.and_then(|f| match f {
        LineFormat::Chat => Some(Format::Chat),
        LineFormat::Preference => Some(Format::Preference),
        LineFormat::Completion => Some(Format::Completion),
        LineFormat::Unknown => None,
    });
    let training = summarize(training_name, &mut train, encoding);
    let validation = validation.map(|(name, mut scanned)| summarize(name, &mut scanned, encoding));
    Ok(Report {
        format,
        model: model.info.name.clone(),
        model_known: model.known,
        training,
        validation,
        problems,
        problems_truncated: truncated,
        max_problems,
        error_count,
        warning_count,
        accepted_count,
        counts_by_code: counts_total,
        training_context_tokens: context_tokens,
        epochs,
        epochs_auto,
        epochs_explanation,
        billed_tokens,
        price_per_million_usd: price,
        estimated_cost_usd: billed_tokens as f64 * price / 1e6,
        min_examples_per_intent: options.min_examples_per_intent,
        intents,
    })
}

/// The findings about the dataset as a whole (the model, the number of examples, the
/// intents), into `dataset_sink`; returns the intent rows of the report.
fn whole_dataset_findings(
    dataset_sink: &mut Sink,
    model: &Resolved,
    train: &FileScan,
    options: &Options,
) -> Vec<IntentRow> {
    let n = train.tokens.len() as u64;
    let (encoding, context_tokens) = (model.info.encoding, model.info.training_context);
    let whole = |sink: &mut Sink, code: Code, message: String| {
        sink.add(Role::Training, 0, String::new(), code, message)
    };
    if !model.known {
        whole(
            dataset_sink,
            Code::UnknownModel,
            format!(
                "model \"{}\" is not in the catalog: assumed {} and a {}-token context, no price",
                model.requested,
                encoding.name(),
                context_tokens
            ),
        );
    }
    if n < MIN_EXAMPLES {
        whole(
            dataset_sink,
            Code::TooFewExamples,
            match (n, train.size_bytes) {
                (0, 0) => format!(
                    "the file is empty: OpenAI requires at least {MIN_EXAMPLES} training examples"
                ),
                _ => format!(
                    "{n} training example{}: OpenAI requires at least {MIN_EXAMPLES}",
                    if n == 1 { "" } else { "s" }
                ),
            },
        );
    } else if n < ADVISED_EXAMPLES {
        whole(
            dataset_sink,
            Code::FewExamples,
            format!("{n} training examples: 50-100 or more usually train noticeably better"),
        );
    }
    let intents = intent_rows(train, options.min_examples_per_intent);
    for row in intents.iter().filter(|r| r.below_minimum) {
        whole(
            dataset_sink,
            Code::IntentBelowMinimum,
            format!(
                "intent \"{}\" has {} example{}, fewer than the minimum of {}",
                check::truncate(&row.intent, 60),
                row.examples,
                if row.examples == 1 { "" } else { "s" },
                options.min_examples_per_intent
            ),
        );
    }

    intents
}

fn merge_counts(a: &Sink, b: &Sink) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for (code, n) in a.counts.iter().chain(b.counts.iter()) {
        *out.entry(code.as_str()).or_default() += n;
    }
    out
}

fn intent_rows(train: &FileScan, min: u64) -> Vec<IntentRow> {
    if train.intents.keys().all(String::is_empty) {
        return Vec::new();
    }
    let mut rows: Vec<IntentRow> = train
        .intents
        .iter()
        .map(|(intent, &examples)| IntentRow {
            intent: intent.clone(),
            examples,
            below_minimum: !intent.is_empty() && examples < min,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.examples
            .cmp(&a.examples)
            .then_with(|| a.intent.cmp(&b.intent))
    });
    rows
}

fn summarize(name: String, scan: &mut FileScan, encoding: Encoding) -> FileSummary {
    FileSummary {
        name,
        sha256: std::mem::take(&mut scan.sha256),
        size_bytes: scan.size_bytes,
        lines: scan.lines,
        examples: scan.tokens.len() as u64,
        tokens: TokenSummary {
            encoding: encoding.name(),
            total: scan.tokens.iter().sum(),
            assistant_total: scan.assistant_tokens.iter().sum(),
            per_example: Distribution::of(&mut scan.tokens),
            assistant_per_example: Distribution::of(&mut scan.assistant_tokens),
            messages_per_example: Distribution::of(&mut scan.messages),
            examples_over_context: scan.over_context,
        },
    }
}
