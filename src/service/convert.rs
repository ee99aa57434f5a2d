//! Conversions between protobuf messages and the core's types.

use crate::dataset::{self, Distribution, FileSummary, Format, Options, Report, Role, Severity};
use crate::error::Error;
use crate::pb;

/// Validation options from a request; zero values mean the documented defaults.
pub(super) fn options(req: &pb::ValidateDatasetRequest) -> Result<Options, Error> {
    let max_problems = match req.max_problems as usize {
        0 => dataset::DEFAULT_MAX_PROBLEMS,
        n if n > dataset::MAX_MAX_PROBLEMS => {
            return Err(Error::invalid(
                "max_problems",
                format!("must be at most {}", dataset::MAX_MAX_PROBLEMS),
            ));
        }
        n => n,
    };
    Ok(Options {
        model: req.model.clone(),
        epochs: req.epochs,
        max_problems,
        min_examples_per_intent: match req.min_examples_per_intent {
            0 => dataset::DEFAULT_MIN_PER_INTENT,
            n => u64::from(n),
        },
        ..Options::default()
    })
}

pub(super) fn report(r: &Report) -> pb::ValidationReport {
    pb::ValidationReport {
        format: match r.format {
            None => pb::DatasetFormat::Unspecified,
            Some(Format::Chat) => pb::DatasetFormat::Chat,
            Some(Format::Preference) => pb::DatasetFormat::Preference,
            Some(Format::Completion) => pb::DatasetFormat::Completion,
        } as i32,
        model: r.model.clone(),
        training: Some(summary(&r.training)),
        validation: r.validation.as_ref().map(summary),
        problems: r
            .problems
            .iter()
            .map(|p| pb::Problem {
                dataset: match p.dataset {
                    Role::Training => pb::DatasetRole::Training,
                    Role::Validation => pb::DatasetRole::Validation,
                } as i32,
                line: p.line,
                path: p.path.clone(),
                code: p.code.as_str().to_owned(),
                severity: match p.severity {
                    Severity::Error => pb::Severity::Error,
                    Severity::Warning => pb::Severity::Warning,
                } as i32,
                message: p.message.clone(),
            })
            .collect(),
        problems_truncated: r.problems_truncated,
        error_count: r.error_count,
        warning_count: r.warning_count,
        counts_by_code: r
            .counts_by_code
            .iter()
            .map(|(code, &count)| pb::CodeCount {
                code: (*code).to_owned(),
                count,
            })
            .collect(),
        training_context_tokens: r.training_context_tokens,
        epochs: r.epochs,
        epochs_source: if r.epochs_auto {
            pb::EpochsSource::Auto
        } else {
            pb::EpochsSource::Requested
        } as i32,
        epochs_explanation: r.epochs_explanation.clone(),
        billed_tokens: r.billed_tokens,
        price_per_million_usd: r.price_per_million_usd,
        estimated_cost_usd: r.estimated_cost_usd,
        intents: r
            .intents
            .iter()
            .map(|i| pb::IntentCount {
                intent: i.intent.clone(),
                examples: i.examples,
                below_minimum: i.below_minimum,
            })
            .collect(),
        max_problems: u32::try_from(r.max_problems).unwrap_or(u32::MAX),
    }
}

fn summary(f: &FileSummary) -> pb::DatasetSummary {
    let t = &f.tokens;
    pb::DatasetSummary {
        sha256: f.sha256.clone(),
        size_bytes: f.size_bytes,
        lines: f.lines,
        examples: f.examples,
        tokens: Some(pb::TokenStats {
            encoding: t.encoding.to_owned(),
            total: t.total,
            per_example: Some(distribution(&t.per_example)),
            assistant_total: t.assistant_total,
            assistant_per_example: Some(distribution(&t.assistant_per_example)),
            messages_per_example: Some(distribution(&t.messages_per_example)),
            examples_over_context: t.examples_over_context,
        }),
    }
}

fn distribution(d: &Distribution) -> pb::Distribution {
    pb::Distribution {
        min: d.min,
        max: d.max,
        mean: d.mean,
        median: d.median,
        p10: d.p10,
        p90: d.p90,
    }
}
