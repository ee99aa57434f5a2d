//! Hostile input: every malformed dataset in tests/hostile/ gets the problems its manifest
//! (tests/hostile/expected.toml) names, at the right lines, without a panic, through the
//! library, the gRPC API and the `finetune validate` CLI. The huge inputs (a 50 MB line,
//! 10,000-deep nesting, a million values, long files) are made here at run time.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestServer, repo_file};
use finetune::pb;
use finetune_core::dataset::{self, Catalog, Code, Input, Options, Report, Severity};
use rand::{Rng, SeedableRng};
use serde::Deserialize;

/// One manifest entry: the problems a file must get, as `code@line` (line 0: the whole
/// dataset). For lines 1 and up the list is exact; a whole-dataset finding is checked only
/// when listed (almost every file here is too small to train and gets `too_few_examples`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    expect: Vec<String>,
    /// Text one of the problems' messages must contain.
    says: Option<String>,
    /// Why this is the right behaviour.
    #[expect(dead_code, reason = "documentation for the reader of the manifest")]
    why: String,
}

fn corpus_dir() -> PathBuf {
    repo_file("tests/hostile")
}

fn manifest() -> BTreeMap<String, Expected> {
    let text = std::fs::read_to_string(corpus_dir().join("expected.toml")).unwrap();
    toml::from_str(&text).expect("tests/hostile/expected.toml parses")
}

fn corpus_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    names.sort();
    names
}

fn options() -> Options {
    Options {
        threads: 2,
        ..Options::default()
    }
}

fn validate(bytes: &[u8]) -> Report {
    dataset::validate(
        Input::from_bytes("hostile.jsonl", bytes),
        None,
        &options(),
        &Catalog::builtin(),
    )
    .expect("validation of in-memory bytes cannot fail")
}

/// `(code, line)` pairs parsed from the manifest's `code@line` strings.
fn parse_expect(items: &[String]) -> BTreeSet<(String, u32)> {
    items
        .iter()
        .map(|item| {
            let (code, line) = item
                .split_once('@')
                .unwrap_or_else(|| panic!("`{item}` is not code@line"));
            assert!(
                Code::ALL.iter().any(|c| c.as_str() == code),
                "unknown code {code}"
            );
            (code.to_owned(), line.parse().unwrap())
        })
        .collect()
}

/// The report's problems as `(code, line)` pairs.
fn found(report: &Report) -> BTreeSet<(String, u32)> {
    report
        .problems
        .iter()
        .map(|p| (p.code.as_str().to_owned(), p.line))
        .collect()
}

/// Checks a report against its manifest entry; returns what is wrong, if anything.
fn mismatch(report: &Report, expected: &Expected) -> Option<String> {
    let want = parse_expect(&expected.expect);
    let got = found(report);
    let missing: Vec<_> = want.difference(&got).collect();
    let unexpected: Vec<_> = got
        .difference(&want)
        .filter(|(_, line)| *line > 0)
        .collect();
    let says_ok = expected
        .says
        .as_ref()
        .is_none_or(|s| report.problems.iter().any(|p| p.message.contains(s)));
    if missing.is_empty() && unexpected.is_empty() && says_ok {
        return None;
    }
    let problems: Vec<String> = report
        .problems
        .iter()
        .map(|p| format!("  {}@{} {}: {}", p.code.as_str(), p.line, p.path, p.message))
        .collect();
    Some(format!(
        "missing {missing:?}, unexpected {unexpected:?}{}\n{}",
        if says_ok {
            String::new()
        } else {
            format!(", no message says {:?}", expected.says)
        },
        problems.join("\n")
    ))
}

fn assert_sane(report: &Report, what: &str) {
    common::invariants::assert_consistent(report, what);
}

#[test]
fn the_corpus_has_at_least_50_files_and_the_manifest_covers_exactly_them() {
    let files = corpus_files();
    assert!(files.len() >= 50, "only {} files", files.len());
    let manifest = manifest();
    let listed: Vec<&String> = manifest.keys().collect();
    assert_eq!(
        files.iter().collect::<Vec<_>>(),
        listed,
        "tests/hostile/*.jsonl and expected.toml differ"
    );
}

#[test]
fn every_corpus_file_gets_its_expected_problems_at_its_lines() {
    let mut failures = Vec::new();
    for (name, expected) in manifest() {
        let bytes = std::fs::read(corpus_dir().join(&name)).unwrap();
        let report = validate(&bytes);
        assert_sane(&report, &name);
        if let Some(why) = mismatch(&report, &expected) {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_error_code_of_the_parser_is_in_the_corpus() {
    let manifest = manifest();
    let all: BTreeSet<String> = manifest
        .values()
        .flat_map(|e| parse_expect(&e.expect))
        .map(|(code, _)| code)
        .collect();
    for code in [
        Code::InvalidUtf8,
        Code::Utf8Bom,
        Code::BlankLine,
        Code::InvalidJson,
        Code::NestingTooDeep,
        Code::DataType,
        Code::DuplicateKey,
        Code::MissingMessagesList,
    ] {
        assert!(all.contains(code.as_str()), "no corpus file for {code:?}");
    }
}

// ---- generated at run time: too big to commit -------------------------------------------

const SYSTEM: &str = r#"{"role":"system","content":"You are File Engine."}"#;

fn valid_line(i: usize) -> String {
    format!(
        r#"{{"messages":[{SYSTEM},{{"role":"user","content":"Question {i}"}},{{"role":"assistant","content":"Answer {i}."}}]}}"#
    )
}

fn expect_only(report: &Report, want: &[(Code, u32)], what: &str) {
    assert_sane(report, what);
    let got: BTreeSet<(&str, u32)> = report
        .problems
        .iter()
        .filter(|p| p.line > 0)
        .map(|p| (p.code.as_str(), p.line))
        .collect();
    let want: BTreeSet<(&str, u32)> = want.iter().map(|(c, l)| (c.as_str(), *l)).collect();
    assert_eq!(got, want, "{what}: {:#?}", report.problems);
}

const MB: usize = 1 << 20;

#[test]
fn a_50_mb_line_of_prose_is_one_example_too_long() {
    let words = "lorem ipsum dolor sit amet ".repeat(50 * MB / 27);
    let line = format!(
        r#"{{"messages":[{SYSTEM},{{"role":"user","content":"Summarise"}},{{"role":"assistant","content":"{words}"}}]}}"#
    );
    assert!(line.len() >= 50 * MB);
    let data = format!("{}\n{line}\n{}\n", valid_line(1), valid_line(3));
    let report = validate(data.as_bytes());
    expect_only(&report, &[(Code::ExampleTooLong, 2)], "50 MB line of prose");
    assert_eq!(report.training.examples, 3);
}

#[test]
fn runs_of_megabytes_without_a_word_break_are_counted_without_a_panic() {
    // The tokenizer's worst cases: 1 MB of spaces overflowed its regex's backtracking stack
    // (a panic), and a long word costs more than its length. 8 MB each keeps this test short.
    for filler in ["x", " ", "^", "7"] {
        let content = filler.repeat(8 * MB);
        let line = format!(
            r#"{{"messages":[{SYSTEM},{{"role":"user","content":"Go"}},{{"role":"assistant","content":"{content}"}}]}}"#
        );
        let started = std::time::Instant::now();
        let report = validate(format!("{line}\n").as_bytes());
        expect_only(
            &report,
            &[(Code::ExampleTooLong, 1)],
            &format!("8 MB of {filler:?}"),
        );
        assert!(
            started.elapsed().as_secs() < 60,
            "{filler:?}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_50_mb_line_cut_off_inside_a_string_is_invalid_json_at_its_line() {
    let mut data = format!("{}\n{}\n", valid_line(1), valid_line(2)).into_bytes();
    data.extend_from_slice(br#"{"messages":[{"role":"user","content":""#);
    data.extend(std::iter::repeat_n(b'a', 50 * MB));
    let report = validate(&data);
    expect_only(
        &report,
        &[(Code::InvalidJson, 3)],
        "unterminated 50 MB line",
    );
    let p = &report.problems.iter().find(|p| p.line == 3).unwrap();
    assert!(p.message.contains("EOF while parsing a string"), "{p:?}");
}

#[test]
fn nesting_10000_deep_is_a_clear_problem_not_a_stack_overflow() {
    let depth = 10_000;
    let arrays = "[".repeat(depth) + &"]".repeat(depth);
    let objects = r#"{"a":"#.repeat(depth) + "1" + &"}".repeat(depth);
    let in_content = format!(r#"{{"messages":[{SYSTEM},{{"role":"user","content":{arrays}}}]}}"#);
    let unclosed = "[{\"a\":".repeat(depth);
    let data = [
        valid_line(1),
        arrays,
        objects,
        in_content,
        unclosed,
        valid_line(6),
    ]
    .join("\n");
    let report = validate(data.as_bytes());
    expect_only(
        &report,
        &[
            (Code::NestingTooDeep, 2),
            (Code::NestingTooDeep, 3),
            (Code::NestingTooDeep, 4),
            (Code::NestingTooDeep, 5),
        ],
        "10,000-deep nesting",
    );
    let p = report
        .problems
        .iter()
        .find(|p| p.code == Code::NestingTooDeep)
        .unwrap();
    assert!(p.message.contains("127 levels"), "{p:?}");
    assert_eq!(report.training.examples, 2);
}

#[test]
fn a_line_of_millions_of_values_stops_at_the_value_limit() {
    // `[{},{},...]`: 3 bytes a value, hundreds of bytes each once parsed.
    let many = "[".to_owned() + &"{},".repeat(3_000_000) + "{}]";
    let numbers = r#"{"messages":[{"role":"user","content":"x"}],"metadata":{"n":["#.to_owned()
        + &"0,".repeat(2_000_000)
        + "0]}}";
    let data = format!("{}\n{many}\n{numbers}\n{}\n", valid_line(1), valid_line(4));
    let report = validate(data.as_bytes());
    expect_only(
        &report,
        &[(Code::TooManyValues, 2), (Code::TooManyValues, 3)],
        "millions of values",
    );
}

#[test]
fn a_long_file_numbers_its_lines_right_to_the_end() {
    let n = 200_000;
    let mut lines: Vec<String> = (1..=n).map(valid_line).collect();
    lines[99_999] = "{\"messages\": [".into();
    lines[n - 2] = String::new();
    let mut data = lines.join("\n");
    data.push_str("\n{\"messages\":");
    let report = validate(data.as_bytes());
    expect_only(
        &report,
        &[
            (Code::InvalidJson, 100_000),
            (Code::BlankLine, n as u32 - 1),
            (Code::InvalidJson, n as u32 + 1),
        ],
        "200,000 lines",
    );
    assert_eq!(report.training.lines, n as u64 + 1);
    assert_eq!(report.training.examples, n as u64 - 2);
}

#[test]
fn a_million_problems_are_counted_and_a_thousand_listed() {
    let data = "{}\n".repeat(1_000_000);
    let report = validate(data.as_bytes());
    assert_sane(&report, "a million {}");
    assert_eq!(
        report.counts_by_code.get("missing_messages_list"),
        Some(&1_000_000)
    );
    assert!(report.problems_truncated);
    assert_eq!(report.problems.len(), dataset::DEFAULT_MAX_PROBLEMS);
}

#[test]
fn an_example_of_200000_messages_is_checked_and_counted() {
    let message = r#"{"role":"user","content":"hi"}"#;
    let line = format!(
        r#"{{"messages":[{SYSTEM},{},{{"role":"assistant","content":"ok"}},{{"role":"bot","content":"x"}}]}}"#,
        vec![message; 200_000].join(",")
    );
    let report = validate(format!("{line}\n").as_bytes());
    expect_only(
        &report,
        &[(Code::ExampleTooLong, 1), (Code::UnrecognizedRole, 1)],
        "200,000 messages",
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.path == "messages[200002].role")
    );
    assert_eq!(report.training.tokens.messages_per_example.max, 200_003.0);
}

// ---- bounded mutation replay (the fuzz target's check, in the normal test suite) --------

/// Mutates `input` like a fuzzer would: flips, inserts, deletes, splices and truncates.
fn mutate(input: &[u8], other: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    const INTERESTING: &[&[u8]] = &[
        b"\n",
        b"\r\n",
        b"\r",
        b"\0",
        b"\xef\xbb\xbf",
        b"\xff",
        b"\xc0",
        b"\"",
        b"\\",
        b"\\u",
        b"\\ud800",
        b"[",
        b"]",
        b"{",
        b"}",
        b",",
        b":",
        b"1e999",
        b"-0",
        b"null",
        b"\"role\"",
        b"\"assistant\"",
        b"\"messages\"",
        b"\"content\"",
        b"\"weight\"",
        b"\"tool_calls\"",
        b"\"metadata\"",
    ];
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = if out.is_empty() {
            0
        } else {
            rng.random_range(0..=out.len())
        };
        match rng.random_range(0..6) {
            0 if at < out.len() => out[at] ^= 1 << rng.random_range(0..8),
            1 => {
                let piece = INTERESTING[rng.random_range(0..INTERESTING.len())];
                out.splice(at..at, piece.iter().copied());
            }
            2 if at < out.len() => {
                let end = (at + rng.random_range(1..=16)).min(out.len());
                out.drain(at..end);
            }
            3 if !other.is_empty() => {
                let from = rng.random_range(0..other.len());
                let end = (from + rng.random_range(1..=64)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            4 => out.truncate(at),
            _ => {
                let end = (at + rng.random_range(1..=32)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
        }
    }
    out
}

#[test]
fn mutations_of_the_corpus_never_panic_and_keep_reports_consistent() {
    let seed: u64 = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let rounds: usize = std::env::var("HOSTILE_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let corpus: Vec<Vec<u8>> = corpus_files()
        .iter()
        .map(|n| std::fs::read(corpus_dir().join(n)).unwrap())
        .filter(|b| b.len() < 64 * 1024)
        .collect();
    let options = Options {
        threads: 1,
        max_problems: 50,
        ..Options::default()
    };
    let catalog = Catalog::builtin();
    for round in 0..rounds {
        for (i, input) in corpus.iter().enumerate() {
            let other = &corpus[(i + round + 1) % corpus.len()];
            let data = mutate(input, other, &mut rng);
            let report = dataset::validate(
                Input::from_bytes("mutant.jsonl", &data),
                Some(Input::from_bytes("mutant-validation.jsonl", other)),
                &options,
                &catalog,
            )
            .unwrap();
            assert_sane(
                &report,
                &format!("seed {seed} round {round} file {i}: {data:?}"),
            );
        }
    }
}

// ---- the same inputs through the gRPC API and the CLI -----------------------------------

/// Corpus files sent through the API and the CLI: one per family of problem.
const THROUGH_THE_SERVICE: &[&str] = &[
    "04-utf8-bom.jsonl",
    "07-utf16le-with-bom.jsonl",
    "11-nul-byte-in-string.jsonl",
    "14-invalid-utf8-in-string.jsonl",
    "24-truncated-last-line-no-newline.jsonl",
    "27-json-array-of-examples.jsonl",
    "43-duplicate-key-role-changes-meaning.jsonl",
    "62-nesting-128-deep.jsonl",
    "68-key-with-terminal-escape.jsonl",
    "74-invalid-json-after-valid-lines.jsonl",
];

#[tokio::test]
async fn validate_dataset_over_grpc_reports_the_same_codes_and_lines() {
    let manifest = manifest();
    let server = TestServer::start().await;
    let mut client = server.client();
    let mut cases: Vec<(String, Vec<u8>)> = THROUGH_THE_SERVICE
        .iter()
        .map(|n| (n.to_string(), std::fs::read(corpus_dir().join(n)).unwrap()))
        .collect();
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    cases.push((
        "10,000 deep".into(),
        format!("{}\n{deep}\n", valid_line(1)).into_bytes(),
    ));
    for (name, bytes) in cases {
        let report = client
            .validate_dataset(pb::ValidateDatasetRequest {
                training: common::inline(bytes, &name),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("{name}: {s:?}"))
            .into_inner()
            .report
            .unwrap();
        let got: BTreeSet<(String, u32)> = report
            .problems
            .iter()
            .filter(|p| p.line > 0)
            .map(|p| (p.code.clone(), p.line))
            .collect();
        let want: BTreeSet<(String, u32)> = match manifest.get(&name) {
            Some(e) => parse_expect(&e.expect)
                .into_iter()
                .filter(|(_, l)| *l > 0)
                .collect(),
            None => [("nesting_too_deep".to_owned(), 2)].into(),
        };
        assert_eq!(got, want, "{name}: {:#?}", report.problems);
        for p in &report.problems {
            let code = Code::ALL.iter().find(|c| c.as_str() == p.code).unwrap();
            let severity = match code.severity() {
                Severity::Error => pb::Severity::Error,
                Severity::Warning => pb::Severity::Warning,
            };
            assert_eq!(p.severity, severity as i32, "{name}: {p:?}");
        }
    }
    server.stop().await;
}

fn finetune_validate(file: &Path, json: bool) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_finetune"));
    cmd.arg("validate").arg(file);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("the binary runs")
}

#[test]
fn finetune_validate_reports_codes_and_lines_and_exits_1_without_panicking() {
    let manifest = manifest();
    for name in THROUGH_THE_SERVICE {
        let path = corpus_dir().join(name);
        let out = finetune_validate(&path, true);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: BTreeSet<(String, u32)> = ["errors", "warnings"]
            .iter()
            .flat_map(|k| json[k].as_array().unwrap().iter())
            .map(|p| {
                (
                    p["code"].as_str().unwrap().to_owned(),
                    p["line"].as_u64().unwrap() as u32,
                )
            })
            .filter(|(_, line)| *line > 0)
            .collect();
        let want: BTreeSet<(String, u32)> = parse_expect(&manifest[*name].expect)
            .into_iter()
            .filter(|(_, l)| *l > 0)
            .collect();
        assert_eq!(got, want, "{name}");

        let out = finetune_validate(&path, false);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let text = String::from_utf8(out.stdout).expect("the report is UTF-8");
        let file = path.display();
        for (code, line) in &want {
            assert!(
                text.contains(&format!("{file}:{line}: ")) && text.contains(&format!("[{code}]")),
                "{name}: no {code} at line {line} in\n{text}"
            );
        }
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{name}: a control character reaches the terminal:\n{text:?}"
        );
    }
}

#[test]
fn finetune_validate_on_a_10000_deep_file_and_on_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.jsonl");
    std::fs::write(&path, "[".repeat(10_000) + "\n").unwrap();
    let out = finetune_validate(&path, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{}:1: error[nesting_too_deep]", path.display())),
        "{text}"
    );
    let out = finetune_validate(dir.path(), false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a directory is a usage error: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
