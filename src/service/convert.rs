//! Conversions between protobuf messages and the core's types.

use crate::pb;
use finetune_core::dataset::{
    self, Acceptance, Distribution, FileSummary, Format, Options, Report, Role, Severity,
};
use finetune_core::error::Error;

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
        accept: accepted_problems(&req.accepted_problems, req.validation.is_some())?,
        ..Options::default()
    })
}

/// The most accepted problems a request may name.
const MAX_ACCEPTED: usize = 1000;

/// A request's `accepted_problems`, checked: sorted and without repeats. A code that may
/// not be accepted, line 0, or the validation file when there is none is INVALID_ARGUMENT
/// naming the entry.
pub(super) fn accepted_problems(
    list: &[pb::AcceptedProblem],
    has_validation: bool,
) -> Result<Vec<Acceptance>, Error> {
    if list.len() > MAX_ACCEPTED {
        return Err(Error::invalid(
            "accepted_problems",
            format!("at most {MAX_ACCEPTED} entries, got {}", list.len()),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        let dataset = match pb::DatasetRole::try_from(a.dataset) {
            Ok(pb::DatasetRole::Unspecified | pb::DatasetRole::Training) => Role::Training,
            Ok(pb::DatasetRole::Validation) if has_validation => Role::Validation,
            Ok(pb::DatasetRole::Validation) => {
                return Err(Error::invalid(
                    format!("accepted_problems[{i}].dataset"),
                    "names the validation dataset, but the request has none",
                ));
            }
            Err(_) => {
                return Err(Error::invalid(
                    format!("accepted_problems[{i}].dataset"),
                    format!("unknown dataset role {}", a.dataset),
                ));
            }
        };
        let field = if a.line == 0 { "line" } else { "code" };
        let accepted = Acceptance::new(dataset, a.line, &a.code)
            .map_err(|e| Error::invalid(format!("accepted_problems[{i}].{field}"), e))?;
        out.push(accepted);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub(super) fn accepted_problem(a: &Acceptance) -> pb::AcceptedProblem {
    pb::AcceptedProblem {
        dataset: role(a.dataset) as i32,
        line: a.line,
        code: a.code.as_str().to_owned(),
    }
}

fn role(r: Role) -> pb::DatasetRole {
    match r {
        Role::Training => pb::DatasetRole::Training,
        Role::Validation => pb::DatasetRole::Validation,
    }
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
                dataset: role(p.dataset) as i32,
                line: p.line,
                path: p.path.clone(),
                code: p.code.as_str().to_owned(),
                severity: match p.severity {
                    Severity::Error => pb::Severity::Error,
                    Severity::Warning => pb::Severity::Warning,
                } as i32,
                message: p.message.clone(),
                accepted: p.accepted,
            })
            .collect(),
        problems_truncated: r.problems_truncated,
        error_count: r.error_count,
        warning_count: r.warning_count,
        accepted_count: r.accepted_count,
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
