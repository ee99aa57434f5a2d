//! The report for people (compiler-style) and as the CLI's JSON object.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::json;

use super::{Distribution, FileSummary, Problem, Report, Role, Severity};

/// The CLI's `--json` object: the full report, with problems split into errors and warnings.
pub fn to_json(report: &Report) -> serde_json::Value {
    let split = |severity: Severity| -> Vec<&Problem> {
        report
            .problems
            .iter()
            .filter(|p| p.severity == severity)
            .collect()
    };
    json!({
        "format": report.format,
        "model": report.model,
        "model_known": report.model_known,
        "examples": report.training.examples,
        "training": report.training,
        "validation": report.validation,
        "errors": split(Severity::Error),
        "warnings": split(Severity::Warning),
        "error_count": report.error_count,
        "warning_count": report.warning_count,
        "accepted_count": report.accepted_count,
        "problems_truncated": report.problems_truncated,
        "max_problems": report.max_problems,
        "counts_by_code": report.counts_by_code,
        "tokens": report.training.tokens,
        "training_context_tokens": report.training_context_tokens,
        "epochs": report.epochs,
        "epochs_auto": report.epochs_auto,
        "epochs_explanation": report.epochs_explanation,
        "billed_tokens": report.billed_tokens,
        "price_per_million_usd": report.price_per_million_usd,
        "estimated_cost_usd": report.estimated_cost_usd,
        "intents": report.intents,
        "min_examples_per_intent": report.min_examples_per_intent,
    })
}

/// The human report: a summary, the coverage table, then one line per problem as
/// `FILE:LINE: error[code]: path: message`.
pub fn to_text(report: &Report) -> String {
    let mut out = String::new();
    let t = &report.training;
    let format = report.format.map_or("unknown format", |f| f.describe());
    let _ = writeln!(
        out,
        "{}: {format}, {} example{} in {} line{} ({})",
        printable(&t.name),
        t.examples,
        plural(t.examples),
        t.lines,
        plural(t.lines),
        bytes(t.size_bytes)
    );
    let _ = writeln!(
        out,
        "model {}{}: {} encoding, training context {} tokens",
        printable(&report.model),
        if report.model_known {
            ""
        } else {
            " (not in catalog)"
        },
        t.tokens.encoding,
        thousands(report.training_context_tokens)
    );
    file_tokens(&mut out, t);
    let _ = writeln!(
        out,
        "epochs:           {} ({})",
        report.epochs, report.epochs_explanation
    );
    let per_epoch = report.billed_tokens / u64::from(report.epochs.max(1));
    let _ = writeln!(
        out,
        "billed tokens:    {} ({} per epoch x {})",
        thousands(report.billed_tokens),
        thousands(per_epoch),
        report.epochs
    );
    if report.price_per_million_usd > 0.0 {
        let _ = writeln!(
            out,
            "estimated cost:   ${:.2} at ${:.2} per 1M training tokens",
            report.estimated_cost_usd, report.price_per_million_usd
        );
        if report.epochs_auto && report.epochs != 3 {
            let at3 = per_epoch as f64 * 3.0 * report.price_per_million_usd / 1e6;
            let _ = writeln!(
                out,
                "                  note: OpenAI picks {} epochs here, not 3; a 3-epoch estimate would say ${at3:.2}",
                report.epochs
            );
        }
    } else {
        let _ = writeln!(
            out,
            "estimated cost:   unknown (no price for {} in the catalog)",
            printable(&report.model)
        );
    }
    if let Some(v) = &report.validation {
        let _ = writeln!(
            out,
            "validation file {}: {} example{} in {} line{} ({}), not billed",
            printable(&v.name),
            v.examples,
            plural(v.examples),
            v.lines,
            plural(v.lines),
            bytes(v.size_bytes)
        );
        file_tokens(&mut out, v);
    }
    if !report.intents.is_empty() {
        let _ = writeln!(
            out,
            "\nintent coverage (minimum {} per intent):",
            report.min_examples_per_intent
        );
        let names: Vec<String> = report
            .intents
            .iter()
            .map(|r| {
                if r.intent.is_empty() {
                    "(untagged)".to_owned()
                } else {
                    shorten(&printable(&r.intent), MAX_INTENT_CHARS)
                }
            })
            .collect();
        let width = names
            .iter()
            .map(|n| n.chars().count().max(10))
            .max()
            .unwrap_or(10);
        for (row, name) in report.intents.iter().zip(&names) {
            let flag = if row.below_minimum {
                "  below minimum"
            } else {
                ""
            };
            let _ = writeln!(out, "  {name:<width$}  {:>5}{flag}", row.examples);
        }
    }
    if !report.problems.is_empty() {
        out.push('\n');
    }
    for p in &report.problems {
        let file = match p.dataset {
            Role::Training => &report.training.name,
            Role::Validation => report
                .validation
                .as_ref()
                .map_or(&report.training.name, |v| &v.name),
        };
        let severity = match (p.severity, p.accepted) {
            (Severity::Error, false) => "error",
            (Severity::Error, true) => "accepted error",
            (Severity::Warning, _) => "warning",
        };
        let file = printable(file);
        let location = if p.line == 0 {
            file.into_owned()
        } else {
            format!("{file}:{}", p.line)
        };
        let path = if p.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", printable(&p.path))
        };
        let _ = writeln!(
            out,
            "{location}: {severity}[{}]: {path}{}",
            p.code.as_str(),
            printable(&p.message)
        );
    }
    if report.problems_truncated {
        let _ = writeln!(
            out,
            "... only the first {} problems are listed; all are counted below",
            report.max_problems
        );
    }
    let accepted = match report.accepted_count {
        0 => String::new(),
        n => format!(" ({n} more accepted)"),
    };
    let _ = writeln!(
        out,
        "\n{} error{}{accepted}, {} warning{}",
        report.error_count,
        plural(report.error_count),
        report.warning_count,
        plural(report.warning_count)
    );
    if !report.counts_by_code.is_empty() {
        let counts: Vec<String> = report
            .counts_by_code
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let _ = writeln!(out, "by code: {}", counts.join(", "));
    }
    out
}

/// Intent names longer than this are shortened in the coverage table.
const MAX_INTENT_CHARS: usize = 40;

/// `s` safe to print on a terminal: control characters (an escape sequence in a dataset
/// could otherwise recolour or rewrite the screen) and bidirectional overrides (which can
/// make text read differently from what it is) are shown as `\u{..}` escapes.
fn printable(s: &str) -> Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// At most `max` characters of `s`, marked with "..." when cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

fn file_tokens(out: &mut String, f: &FileSummary) {
    let tk = &f.tokens;
    let _ = writeln!(
        out,
        "tokens:           {} total; per example {}",
        thousands(tk.total),
        dist(&tk.per_example)
    );
    let _ = writeln!(
        out,
        "assistant tokens: {} total; per example {}",
        thousands(tk.assistant_total),
        dist(&tk.assistant_per_example)
    );
    let _ = writeln!(
        out,
        "messages:         per example {}",
        dist(&tk.messages_per_example)
    );
    if tk.examples_over_context > 0 {
        let _ = writeln!(
            out,
            "over context:     {} example{} will be truncated",
            tk.examples_over_context,
            plural(tk.examples_over_context)
        );
    }
}

fn dist(d: &Distribution) -> String {
    format!(
        "min {} / p10 {} / median {} / mean {:.1} / p90 {} / max {}",
        trim(d.min),
        trim(d.p10),
        trim(d.median),
        d.mean,
        trim(d.p90),
        trim(d.max)
    )
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

/// 12345 -> "12,345".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
