//! The validator against the emulator's own reading of OpenAI's rules
//! (`finetune_emulator::training_file`, which shares no code with `finetune_core::dataset`), over
//! the hostile corpus, the fuzz corpus when present (`fuzz/corpus/`), the reference and example
//! datasets and the audited spec cases (`tests/differential/*.jsonl`). Each file either gets
//! the same verdict from both (accept or reject, leaving aside the 10-example minimum both
//! apply), or its disagreement matches a case in `tests/differential/cases.toml`, each of which
//! is a row of the README's table "Where validation is stricter or looser than OpenAI".
//!
//! `cargo test --test integration differential:: -- --nocapture` prints every file where they disagree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use finetune_core::dataset::{self, Catalog, Code, Input, Options, Report, Severity};
use finetune_emulator::training_file::{self, Method, Rejected};
use serde::Deserialize;

const MODEL: &str = "gpt-4o-2024-08-06";

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Which side refuses the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stricter {
    /// The validator rejects a file OpenAI's published rules accept.
    Validator,
    /// The validator accepts a file OpenAI's published rules reject.
    Emulator,
}

/// A known disagreement, explained in the README table.
#[derive(Debug, Deserialize)]
struct Case {
    stricter: Stricter,
    /// When the validator is stricter: the blocking problems that make it so, as `code` or
    /// `code: message fragment`. A file is explained when every blocking problem matches one
    /// of the cases' entries.
    #[serde(default)]
    validator: Vec<String>,
    /// When the emulator is stricter: a fragment of its rejection's reason.
    #[serde(default)]
    emulator: Option<String>,
    why: String,
}

fn cases() -> BTreeMap<String, Case> {
    let text = std::fs::read_to_string(repo("tests/differential/cases.toml")).unwrap();
    toml::from_str(&text).expect("tests/differential/cases.toml parses")
}

/// The corpus: every file, by its path from the repository root.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut add_dir = |dir: &str, ext: Option<&str>| {
        let Ok(entries) = std::fs::read_dir(repo(dir)) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| ext.is_none_or(|x| p.extension().is_some_and(|e| e == x)))
            .collect();
        paths.sort();
        for p in paths {
            let rel = p.strip_prefix(repo("")).unwrap().display().to_string();
            files.push((rel, std::fs::read(&p).unwrap()));
        }
    };
    add_dir("tests/hostile", Some("jsonl"));
    add_dir("tests/differential", Some("jsonl"));
    add_dir("reference/datasets", Some("jsonl"));
    add_dir("examples", Some("jsonl"));
    // Not in git: present where `cargo fuzz` has run (README, "Hostile input and fuzzing").
    add_dir("fuzz/corpus/validate", None);
    files
}

/// The validator's blocking problems, leaving aside the 10-example minimum.
fn validator_errors(bytes: &[u8]) -> Vec<dataset::Problem> {
    let options = Options {
        model: MODEL.to_owned(),
        threads: 1,
        ..Options::default()
    };
    let report: Report = dataset::validate(
        Input::from_bytes("t.jsonl", bytes),
        None,
        &options,
        &Catalog::builtin(),
    )
    .expect("validation runs");
    report
        .problems
        .into_iter()
        .filter(|p| p.severity == Severity::Error && p.code != Code::TooFewExamples)
        .collect()
}

/// The emulator's verdict: accepted under either method, as OpenAI's job would be under the
/// method that fits the file; otherwise the rejection under the method the first line asks
/// for (`input` means DPO).
fn emulator_verdict(bytes: &[u8]) -> Result<(), Rejected> {
    let bpe = training_file::tokenizer_for(MODEL);
    let supervised = training_file::check_file(bytes, Method::Supervised, bpe, 65_536);
    let dpo = training_file::check_file(bytes, Method::Dpo, bpe, 65_536);
    match (supervised, dpo) {
        (Ok(_), _) | (_, Ok(_)) => Ok(()),
        (Err(s), Err(d)) => {
            let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
            let wants_dpo = serde_json::from_slice::<serde_json::Value>(first)
                .is_ok_and(|v| v.get("input").is_some());
            Err(if wants_dpo { d } else { s })
        }
    }
}

fn matches_entry(p: &dataset::Problem, entry: &str) -> bool {
    match entry.split_once(": ") {
        Some((code, fragment)) => p.code.as_str() == code && p.message.contains(fragment),
        None => p.code.as_str() == entry,
    }
}

/// One file's disagreement and the case that explains it, if any.
struct Disagreement {
    file: String,
    stricter: Stricter,
    detail: String,
    case: Option<String>,
}

fn disagreements() -> Vec<Disagreement> {
    let cases = cases();
    let mut out = Vec::new();
    for (file, bytes) in corpus() {
        let errors = validator_errors(&bytes);
        let emulator = emulator_verdict(&bytes);
        match (errors.is_empty(), emulator) {
            (true, Ok(())) | (false, Err(_)) => {}
            (false, Ok(())) => {
                // Each blocking problem must be one the table explains; the case named is the
                // first problem's.
                let case_of = |p: &dataset::Problem| {
                    cases
                        .iter()
                        .filter(|(_, c)| c.stricter == Stricter::Validator)
                        .find(|(_, c)| c.validator.iter().any(|e| matches_entry(p, e)))
                        .map(|(id, _)| id.clone())
                };
                let all: Option<Vec<String>> = errors.iter().map(case_of).collect();
                let first = &errors[0];
                out.push(Disagreement {
                    file,
                    stricter: Stricter::Validator,
                    detail: format!(
                        "validator: {}@{} {}: {}",
                        first.code.as_str(),
                        first.line,
                        first.path,
                        first.message
                    ),
                    case: all.and_then(|ids| ids.into_iter().next()),
                });
            }
            (true, Err(rejected)) => {
                let case = cases
                    .iter()
                    .filter(|(_, c)| c.stricter == Stricter::Emulator)
                    .find(|(_, c)| {
                        c.emulator
                            .as_deref()
                            .is_some_and(|f| rejected.reason.contains(f))
                    })
                    .map(|(id, _)| id.clone());
                out.push(Disagreement {
                    file,
                    stricter: Stricter::Emulator,
                    detail: format!("emulator: {rejected}"),
                    case,
                });
            }
        }
    }
    out
}

#[test]
fn every_disagreement_with_openais_rules_is_explained() {
    let found = disagreements();
    for d in &found {
        eprintln!(
            "{:<55} {:<9} {:<28} {}",
            d.file,
            match d.stricter {
                Stricter::Validator => "stricter",
                Stricter::Emulator => "looser",
            },
            d.case.as_deref().unwrap_or("UNEXPLAINED"),
            d.detail
        );
    }
    eprintln!(
        "{} files where the validator and OpenAI's rules disagree",
        found.len()
    );
    let unexplained: Vec<String> = found
        .iter()
        .filter(|d| d.case.is_none())
        .map(|d| format!("{}: {}", d.file, d.detail))
        .collect();
    assert!(
        unexplained.is_empty(),
        "disagreements no case in tests/differential/cases.toml (and the README table) explains:\n{}",
        unexplained.join("\n")
    );
}

#[test]
fn every_case_is_a_row_of_the_readme_table_and_stays_true() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let table = readme
        .split("## Where validation is stricter or looser than OpenAI")
        .nth(1)
        .expect("the README has the section")
        .split("\n## ")
        .next()
        .unwrap();
    let found = disagreements();
    for (id, case) in cases() {
        assert!(
            table.contains(&format!("| `{id}` |")),
            "README table has no row for case {id}"
        );
        assert!(!case.why.is_empty());
        match case.stricter {
            Stricter::Validator => assert!(!case.validator.is_empty(), "{id}"),
            Stricter::Emulator => assert!(case.emulator.is_some(), "{id}"),
        }
        // A case whose example is committed must still be a disagreement: a fixed rule leaves
        // no stale row behind.
        if let Some(file) = table_file(table, &id) {
            assert!(
                found
                    .iter()
                    .any(|d| d.file == file && d.case.as_deref() == Some(id.as_str())),
                "case {id}: {file} no longer disagrees; drop the case or the file from it"
            );
        }
    }
}

/// The example file a table row names (`tests/...jsonl` in its second column), if any.
fn table_file<'t>(table: &'t str, id: &str) -> Option<&'t str> {
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("| `{id}` |")))?;
    let cell = row.split('|').nth(2)?;
    let start = cell.find('`')? + 1;
    let end = start + cell[start..].find('`')?;
    let file = &cell[start..end];
    (file.ends_with(".jsonl") && Path::new(file).components().count() > 1).then_some(file)
}

#[test]
fn the_audited_spec_cases_agree_or_are_explained() {
    // Each file of tests/differential/ is one case of the audit (README); the verdicts here
    // pin what both sides say, so a change to either shows up in review.
    let expect = [
        ("developer-message.jsonl", false, false),
        ("weight-one-point-zero.jsonl", true, true),
        ("weight-string-one.jsonl", false, false),
        ("dpo-function-role-in-input.jsonl", true, true),
        ("dpo-extra-key-in-output.jsonl", false, false),
        ("dpo-name-in-output.jsonl", true, true),
        ("dpo-extra-key-in-input.jsonl", false, false),
        ("dpo-image-in-input.jsonl", false, false),
        ("image-http-url.jsonl", false, false),
        ("image-gif-data-url.jsonl", false, false),
        ("images-ten.jsonl", true, true),
        ("images-eleven.jsonl", false, false),
        ("tool-call-only-assistant.jsonl", true, true),
    ];
    for (name, validator_accepts, emulator_accepts) in expect {
        let bytes = std::fs::read(repo(&format!("tests/differential/{name}"))).unwrap();
        let errors = validator_errors(&bytes);
        assert_eq!(errors.is_empty(), validator_accepts, "{name}: {errors:#?}");
        assert_eq!(
            emulator_verdict(&bytes).is_ok(),
            emulator_accepts,
            "{name}: {:?}",
            emulator_verdict(&bytes)
        );
    }
}

/// One epoch of `bytes` as the validator estimates it and as the emulator counts it.
fn tokens_per_epoch(bytes: &[u8], model: &str) -> (u64, u64) {
    let options = Options {
        model: model.to_owned(),
        epochs: Some(1),
        threads: 1,
        ..Options::default()
    };
    let report = dataset::validate(
        Input::from_bytes("t.jsonl", bytes),
        None,
        &options,
        &Catalog::builtin(),
    )
    .expect("validation runs");
    let info = Catalog::builtin().resolve(model).info;
    let counted = training_file::check_file(
        bytes,
        Method::Supervised,
        training_file::tokenizer_for(&info.name),
        info.training_context,
    )
    .expect("the emulator accepts the dataset")
    .tokens_per_epoch;
    (report.billed_tokens, counted)
}

#[test]
fn the_emulator_counts_the_recorded_jobs_file_as_openai_did() {
    // openai-dotnet's recorded job: 5,830 trained tokens for 10 epochs of its 10-example
    // sample on gpt-3.5-turbo-0125, against the cookbook estimate's 6,030.
    let sample = std::fs::read(repo(
        "reference/datasets/openai-dotnet_fine_tuning_sample.jsonl",
    ))
    .unwrap();
    assert_eq!(tokens_per_epoch(&sample, "gpt-3.5-turbo-0125"), (603, 583));
    for (file, model) in [
        (
            "reference/datasets/openai-dotnet_fine_tuning_sample.jsonl",
            "gpt-4o-2024-08-06",
        ),
        (
            "reference/datasets/toy_chat_fine_tuning.jsonl",
            "gpt-4o-2024-08-06",
        ),
        ("examples/training-data.jsonl", "gpt-4o-2024-08-06"),
    ] {
        let (estimate, counted) = tokens_per_epoch(&std::fs::read(repo(file)).unwrap(), model);
        let change = (counted as f64 - estimate as f64) / estimate as f64 * 100.0;
        eprintln!(
            "{file} on {model}: estimate {estimate}, emulator {counted} a epoch ({change:+.1}%)"
        );
        assert!(counted < estimate, "no reply priming: {file}");
    }
}
