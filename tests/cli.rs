//! The `finetune validate` command as users run it: exit codes, the compiler-style
//! report and the JSON object.

use crate::common;

use std::process::{Command, Output};

use common::repo_file;

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn the_sample_dataset_validates_cleanly() {
    let sample = repo_file("examples/training-data.jsonl");
    let out = common::finetune(None, &["validate", sample.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("supervised chat, 13 examples"), "{text}");
    assert!(
        text.contains("epochs:           7 (auto: 13 examples x 3 = 39 < 100"),
        "{text}"
    );
    assert!(text.contains("not 3"), "{text}");
    assert!(text.contains("generate_code"), "{text}");
    assert!(text.contains("0 errors"), "{text}");
}

#[test]
fn the_default_file_is_training_data_jsonl_in_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_file("examples/training-data.jsonl"),
        dir.path().join("training-data.jsonl"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .arg("validate")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("training-data.jsonl: supervised chat"));
}

#[test]
fn errors_print_file_line_code_and_path_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"bot\", \"content\": \"x\"}]}\n").unwrap();
    let out = common::finetune(None, &["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let file = path.display();
    assert!(
        text.contains(&format!(
            "{file}:1: error[unrecognized_role]: messages[1].role: unrecognized role \"bot\""
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{file}: error[too_few_examples]")),
        "{text}"
    );
}

#[test]
fn json_output_has_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.jsonl");
    std::fs::write(&path, "not json\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n").unwrap();
    let out = common::finetune(
        None,
        &[
            "validate",
            path.to_str().unwrap(),
            "--json",
            "--model",
            "gpt-4o-mini",
            "--epochs",
            "4",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "format",
        "examples",
        "errors",
        "warnings",
        "counts_by_code",
        "tokens",
        "epochs",
        "billed_tokens",
        "estimated_cost_usd",
        "intents",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["format"], "chat");
    assert_eq!(v["examples"], 1);
    assert_eq!(v["epochs"], 4);
    let error = &v["errors"][1];
    assert_eq!(
        (
            error["line"].as_u64(),
            error["code"].as_str(),
            error["path"].as_str()
        ),
        (Some(1), Some("invalid_json"), Some("")),
        "{v}"
    );
    assert_eq!(v["errors"][0]["code"], "too_few_examples");
    assert_eq!(
        (
            v["warnings"][0]["code"].as_str(),
            v["warnings"][0]["line"].as_u64()
        ),
        (Some("missing_system_message"), Some(2))
    );
    let total = v["tokens"]["total"].as_u64().unwrap();
    assert!(v["tokens"]["per_example"]["median"].is_number());
    assert_eq!(v["billed_tokens"].as_u64(), Some(total * 4));
    let cost = v["estimated_cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (total * 4) as f64 * 3.0 / 1e6).abs() < 1e-12,
        "gpt-4o-mini trains at $3 per 1M"
    );
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let out = common::finetune(None, &["validate", "/definitely/not/here.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open /definitely/not/here.jsonl"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let out = common::finetune(None, &["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));

    let out = common::finetune(None, &["validate", "x.jsonl", "--epochs", "0"]);
    assert_eq!(out.status.code(), Some(2));

    let sample = repo_file("examples/training-data.jsonl");
    let out = common::finetune(
        None,
        &[
            "validate",
            sample.to_str().unwrap(),
            "--catalog",
            "/nope.toml",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read catalog /nope.toml"));
}

#[test]
fn a_validation_file_is_checked_for_overlap() {
    let train = repo_file("reference/datasets/openai-dotnet_fine_tuning_sample.jsonl");
    let out = common::finetune(
        None,
        &[
            "validate",
            train.to_str().unwrap(),
            "--validation-file",
            train.to_str().unwrap(),
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "overlap is a warning");
    assert_eq!(v["counts_by_code"]["validation_overlap"], 10);
    assert_eq!(v["validation"]["examples"], 10);
}
