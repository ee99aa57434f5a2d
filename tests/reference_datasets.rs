//! Exact token, epoch and cost figures for the real datasets in reference/datasets,
//! whose expected numbers are published in that folder's README.

use crate::common;

use std::path::PathBuf;

use finetune_core::dataset::{self, Catalog, Input, Options, Report};

fn validate(file: &str, model: &str) -> Report {
    let bytes = common::reference_dataset(file);
    let options = Options {
        model: model.into(),
        ..Options::default()
    };
    dataset::validate(
        Input::from_bytes(file, &bytes),
        None,
        &options,
        &Catalog::builtin(),
    )
    .unwrap()
}

/// Per-example totals in file order are not kept in the report; the distribution and the
/// total pin them down together with the README's figures.
fn figures(r: &Report) -> (u64, f64, f64, f64) {
    let t = &r.training.tokens;
    (
        t.total,
        t.per_example.min,
        t.per_example.max,
        t.per_example.median,
    )
}

const CL100K: &str = "gpt-3.5-turbo-0125";
const O200K: &str = "gpt-4o-2024-08-06";

#[test]
fn toy_dataset_matches_the_cookbook_notebook() {
    let r = validate("toy_chat_fine_tuning.jsonl", CL100K);
    assert_eq!(r.training.tokens.encoding, "cl100k_base");
    // 45, 111, 26, 28, 8032
    assert_eq!(figures(&r), (8242, 26.0, 8032.0, 45.0));
    assert!((r.training.tokens.per_example.mean - 1648.4).abs() < 1e-9);
    assert_eq!(r.training.tokens.assistant_total, 8051);
    assert_eq!(
        (
            r.training.tokens.assistant_per_example.min,
            r.training.tokens.assistant_per_example.max
        ),
        (4.0, 8000.0)
    );
    assert_eq!(r.training.examples, 5);
    assert_eq!(r.epochs, 20);
    // Passes the notebook's format checks; the warnings it prints are ours too.
    assert_eq!(r.counts_by_code.get("missing_system_message"), Some(&1));
    assert_eq!(r.counts_by_code.get("missing_user_message"), Some(&1));
    let lines: Vec<u32> = r
        .problems
        .iter()
        .filter(|p| p.line > 0)
        .map(|p| p.line)
        .collect();
    assert_eq!(lines, vec![3, 4]);
    assert_eq!(r.counts_by_code.get("too_few_examples"), Some(&1));

    let r = validate("toy_chat_fine_tuning.jsonl", O200K);
    assert_eq!(r.training.tokens.encoding, "o200k_base");
    // 43, 106, 26, 27, 8031
    assert_eq!(figures(&r), (8233, 26.0, 8031.0, 43.0));
}

#[test]
fn toy_dataset_billing_with_the_notebooks_4096_token_limit() {
    // gpt-3.5-turbo-0613 trains on 4,096-token examples, the notebook's older limit.
    let r = validate("toy_chat_fine_tuning.jsonl", "gpt-3.5-turbo-0613");
    assert_eq!(r.training_context_tokens, 4096);
    assert_eq!(r.billed_tokens, 86_120, "(45+111+26+28+4096) x 20 epochs");
    assert_eq!(r.training.tokens.examples_over_context, 1);
    let long = r
        .problems
        .iter()
        .find(|p| p.code.as_str() == "example_too_long")
        .unwrap();
    assert_eq!(long.line, 5);
    assert!((r.estimated_cost_usd - 86_120.0 * 8.0 / 1e6).abs() < 1e-12);
}

#[test]
fn dotnet_sample_both_encodings() {
    let r = validate("openai-dotnet_fine_tuning_sample.jsonl", CL100K);
    assert_eq!(figures(&r), (603, 52.0, 69.0, 60.5));
    assert_eq!(
        (r.training.lines, r.training.examples),
        (10, 10),
        "no trailing newline, still 10 lines"
    );
    assert_eq!(r.error_count, 0, "{:#?}", r.problems);
    assert_eq!(r.epochs, 10);
    assert_eq!(r.billed_tokens, 6030);

    let r = validate("openai-dotnet_fine_tuning_sample.jsonl", O200K);
    // 58, 58, 60, 60, 69, 61, 64, 61, 57, 52
    assert_eq!(figures(&r), (600, 52.0, 69.0, 60.0));
    assert_eq!(r.billed_tokens, 6000);
    assert!(
        (r.estimated_cost_usd - 0.15).abs() < 1e-12,
        "6,000 tokens at $25 per 1M"
    );
}

#[test]
fn dotnet_validation_file_both_encodings() {
    for model in [CL100K, O200K] {
        let r = validate("openai-dotnet_fine_tuning_sample_validation.jsonl", model);
        // 51, 52, 54, 55 with irregular whitespace in lines 2-4.
        assert_eq!(figures(&r), (212, 51.0, 55.0, 53.0), "{model}");
        assert_eq!(r.counts_by_code.get("invalid_json"), None);
    }
}

#[test]
fn training_and_validation_together() {
    let train = common::reference_dataset("openai-dotnet_fine_tuning_sample.jsonl");
    let valid = common::reference_dataset("openai-dotnet_fine_tuning_sample_validation.jsonl");
    let options = Options {
        model: O200K.into(),
        epochs: Some(3),
        ..Options::default()
    };
    let r = dataset::validate(
        Input::from_bytes("train", &train),
        Some(Input::from_bytes("valid", &valid)),
        &options,
        &Catalog::builtin(),
    )
    .unwrap();
    assert_eq!(r.validation.as_ref().unwrap().tokens.total, 212);
    assert_eq!((r.epochs, r.epochs_auto), (3, false));
    assert_eq!(r.billed_tokens, 1800);
    assert_eq!(r.counts_by_code.get("validation_overlap"), None);
    assert_eq!(r.error_count, 0);
}

#[test]
fn sha256_and_size_identify_the_bytes() {
    let r = validate("toy_chat_fine_tuning.jsonl", O200K);
    assert_eq!(r.training.size_bytes, 27_385);
    let r2 = validate("toy_chat_fine_tuning.jsonl", CL100K);
    assert_eq!(r.training.sha256.len(), 64);
    assert_eq!(r.training.sha256, r2.training.sha256);
}

#[test]
fn the_pipelines_thirteen_examples_train_for_seven_epochs() {
    let bytes = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/training-data.jsonl"),
    )
    .unwrap();
    let r = dataset::validate(
        Input::from_bytes("sample", &bytes),
        None,
        &Options::default(),
        &Catalog::builtin(),
    )
    .unwrap();
    assert_eq!(r.training.examples, 13);
    assert_eq!(r.error_count, 0, "{:#?}", r.problems);
    assert_eq!(
        (r.epochs, r.epochs_auto),
        (7, true),
        "not the 3 the pipeline's cost table assumed"
    );
    assert!(
        r.epochs_explanation.contains("100 / 13"),
        "{}",
        r.epochs_explanation
    );
    assert_eq!(r.billed_tokens, r.training.tokens.total * 7);
    let intents: Vec<(&str, u64)> = r
        .intents
        .iter()
        .map(|i| (i.intent.as_str(), i.examples))
        .collect();
    assert_eq!(
        intents,
        vec![
            ("generate_code", 4),
            ("fix_code", 3),
            ("explain", 2),
            ("iteration", 1),
            ("platform_error", 1),
            ("react_code", 1),
            ("style_question", 1)
        ]
    );
}

/// Tokens of each line, in file order, through the same public API.
fn per_example(file: &str, model: &str) -> Vec<u64> {
    let bytes = common::reference_dataset(file);
    let options = Options {
        model: model.into(),
        ..Options::default()
    };
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            dataset::validate(
                Input::from_bytes(file, line),
                None,
                &options,
                &Catalog::builtin(),
            )
            .unwrap()
            .training
            .tokens
            .total
        })
        .collect()
}

#[test]
fn per_example_tokens_match_the_published_table() {
    let toy = "toy_chat_fine_tuning.jsonl";
    let sample = "openai-dotnet_fine_tuning_sample.jsonl";
    let val = "openai-dotnet_fine_tuning_sample_validation.jsonl";
    assert_eq!(per_example(toy, CL100K), [45, 111, 26, 28, 8032]);
    assert_eq!(per_example(toy, O200K), [43, 106, 26, 27, 8031]);
    assert_eq!(
        per_example(sample, CL100K),
        [58, 60, 60, 61, 69, 61, 64, 61, 57, 52]
    );
    assert_eq!(
        per_example(sample, O200K),
        [58, 58, 60, 60, 69, 61, 64, 61, 57, 52]
    );
    assert_eq!(per_example(val, CL100K), [51, 52, 54, 55]);
    assert_eq!(per_example(val, O200K), [51, 52, 54, 55]);
}
