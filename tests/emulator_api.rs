//! The OpenAI emulator over HTTP: job lifecycle, failures, cancel, paging, uploads, error
//! bodies, chat, faults and stats, and that its responses validate against the schemas of
//! OpenAI's spec (with the same few relaxations real recorded traffic needs).

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use finetune_core::dataset::{self, Catalog, Input, Options};
use finetune_emulator::{Emulator, EmulatorConfig, Fault, training_file};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const KEY: &str = "sk-emulator-test";

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("reference")
        .join(rel)
}

fn dataset_bytes(name: &str) -> Vec<u8> {
    let path = shared(&format!("datasets/{name}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const SAMPLE: &str = "openai-dotnet_fine_tuning_sample.jsonl";
const SAMPLE_VALIDATION: &str = "openai-dotnet_fine_tuning_sample_validation.jsonl";
const TOY: &str = "toy_chat_fine_tuning.jsonl";

/// An emulator on 127.0.0.1:0 and a client for it.
struct Env {
    emu: Emulator,
    http: reqwest::Client,
    base: String,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn start(time_scale: f64) -> Env {
    start_with(EmulatorConfig {
        time_scale,
        ..EmulatorConfig::default()
    })
    .await
}

async fn start_with(config: EmulatorConfig) -> Env {
    let emu = common::emulator_with(config).await;
    let base = emu.base_url();
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with("/v1"),
        "{base}"
    );
    Env {
        emu,
        http: reqwest::Client::new(),
        base,
    }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The admin endpoints live beside `/v1`.
    fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.base.trim_end_matches("/v1"))
    }

    async fn reply(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.bearer_auth(KEY).send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.reply(self.http.get(self.url(path))).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.reply(self.http.post(self.url(path)).json(&body)).await
    }

    async fn ok_get(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.body);
        r.body
    }

    async fn ok_post(&self, path: &str, body: Value) -> Value {
        let r = self.post(path, body).await;
        assert_eq!(r.status, StatusCode::OK, "POST {path}: {}", r.body);
        r.body
    }

    async fn upload(&self, filename: &str, bytes: Vec<u8>, purpose: &str) -> Reply {
        let form = reqwest::multipart::Form::new()
            .text("purpose", purpose.to_owned())
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name(filename.to_owned()),
            );
        self.reply(self.http.post(self.url("/files")).multipart(form))
            .await
    }

    async fn upload_dataset(&self, name: &str) -> String {
        let r = self.upload(name, dataset_bytes(name), "fine-tune").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    async fn text(&self, path: &str) -> String {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// Polls the job until its status is terminal; returns it and every status seen.
    async fn wait_terminal(&self, id: &str) -> (Value, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen: Vec<String> = Vec::new();
        loop {
            let job = self.ok_get(&format!("/fine_tuning/jobs/{id}")).await;
            let status = job["status"].as_str().unwrap().to_owned();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if ["succeeded", "failed", "cancelled"].contains(&status.as_str()) {
                return (job, seen);
            }
            assert!(Instant::now() < deadline, "job {id} stuck in {status}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every event of a job, newest first, read in pages of `page` with `after`.
    async fn all_events(&self, id: &str, page: usize) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/fine_tuning/jobs/{id}/events?limit={page}");
            if let Some(a) = &after {
                path.push_str(&format!("&after={a}"));
            }
            let list = self.ok_get(&path).await;
            let data = list["data"].as_array().unwrap().clone();
            assert!(data.len() <= page);
            let more = list["has_more"].as_bool().unwrap();
            after = data.last().map(|e| e["id"].as_str().unwrap().to_owned());
            out.extend(data);
            if !more {
                return out;
            }
        }
    }
}

/// `trained_tokens` of the one succeeded job in the recorded real traffic (openai-dotnet's
/// `GetCheckpoints`: gpt-3.5-turbo-0125, 10 examples, auto epochs resolved to 10).
fn recorded_trained_tokens() -> u64 {
    let text = std::fs::read_to_string(shared(
        "recorded/openai-dotnet/FineTuningClientTests/GetCheckpoints.json",
    ))
    .unwrap();
    let record: Value = serde_json::from_str(&text).unwrap();
    let tokens: Vec<u64> = record["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["ResponseBody"]["data"].as_array())
        .flatten()
        .filter(|j| j["id"] == "ftjob-JlHszAFOnjdLuFiGT3YBkl08")
        .filter_map(|j| j["trained_tokens"].as_u64())
        .collect();
    assert!(
        !tokens.is_empty(),
        "the recorded job is in GetCheckpoints.json"
    );
    assert!(tokens.iter().all(|t| *t == tokens[0]));
    tokens[0]
}

/// Tokens of one epoch of `bytes` by the emulator's own counting.
fn emulator_tokens_per_epoch(bytes: &[u8], model: &str) -> u64 {
    let info = Catalog::builtin().resolve(model).info;
    training_file::check_file(
        bytes,
        training_file::Method::Supervised,
        training_file::tokenizer_for(&info.name),
        info.training_context,
    )
    .unwrap()
    .tokens_per_epoch
}

fn billed_tokens(bytes: &[u8], model: &str, epochs: Option<u32>) -> u64 {
    let options = Options {
        model: model.to_owned(),
        epochs,
        ..Options::default()
    };
    dataset::validate(
        Input::from_bytes("t", bytes),
        None,
        &options,
        &Catalog::builtin(),
    )
    .unwrap()
    .billed_tokens
}

fn is_alnum(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} not a string in {v}"))
}

#[tokio::test]
async fn ten_example_job_succeeds_with_checkpoints_tokens_and_falling_loss() {
    let env = start(400.0).await;
    let file = env.upload_dataset(SAMPLE).await;
    assert!(file.starts_with("file-"), "{file}");
    let created = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-3.5-turbo", "training_file": file, "suffix": "unit", "seed": 42,
                   "metadata": {"team": "tests"}}),
        )
        .await;
    let id = str_of(&created, "id").to_owned();
    assert!(
        id.starts_with("ftjob-") && is_alnum(&id["ftjob-".len()..]),
        "{id}"
    );
    assert_eq!(created["status"], "validating_files");
    assert_eq!(created["model"], "gpt-3.5-turbo-0125");
    assert_eq!(created["error"], json!({}));
    assert_eq!(
        created["hyperparameters"],
        json!({"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"})
    );
    assert_eq!(created["seed"], 42);
    assert_eq!(created["user_provided_suffix"], "unit");
    assert_eq!(created["metadata"], json!({"team": "tests"}));

    let (job, seen) = env.wait_terminal(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(seen.first().map(String::as_str), Some("validating_files"));
    assert_eq!(seen.last().map(String::as_str), Some("succeeded"));

    // 10 examples: auto epochs 10, batch 1, 100 steps.
    assert_eq!(
        job["hyperparameters"],
        json!({"n_epochs": 10, "batch_size": 1, "learning_rate_multiplier": 2.0})
    );
    assert_eq!(
        job["method"],
        json!({"type": "supervised", "supervised": {"hyperparameters":
            {"batch_size": 1, "learning_rate_multiplier": 2.0, "n_epochs": 10}}})
    );
    // The emulator counts by its own rule and reports what OpenAI reported for this file in
    // the recorded real job, not the validator's estimate (the cookbook's 603 x 10).
    let estimate = billed_tokens(&dataset_bytes(SAMPLE), "gpt-3.5-turbo-0125", None);
    assert_eq!(estimate, 6030, "603 cookbook tokens x 10 epochs");
    let recorded = recorded_trained_tokens();
    assert_eq!(recorded, 5830);
    assert_eq!(job["trained_tokens"], recorded, "{job}");
    assert!(job["estimated_finish"].is_null());
    assert!(job["finished_at"].as_i64().unwrap() > job["created_at"].as_i64().unwrap());

    let model = str_of(&job, "fine_tuned_model").to_owned();
    let parts: Vec<&str> = model.split(':').collect();
    assert_eq!(parts.len(), 5, "{model}");
    assert_eq!(
        &parts[..4],
        &["ft", "gpt-3.5-turbo-0125", "finetune-emulator", "unit"]
    );
    assert!(parts[4].len() == 8 && is_alnum(parts[4]), "{model}");

    let checkpoints = env
        .ok_get(&format!("/fine_tuning/jobs/{id}/checkpoints"))
        .await;
    let data = checkpoints["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let steps: Vec<i64> = data
        .iter()
        .map(|c| c["step_number"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [100, 90, 80], "newest first");
    assert_eq!(data[0]["fine_tuned_model_checkpoint"], model.as_str());
    for (c, step) in data.iter().zip(steps).skip(1) {
        let name = str_of(c, "fine_tuned_model_checkpoint");
        assert!(name.ends_with(&format!(":ckpt-step-{step}")), "{name}");
        assert!(name.starts_with("ft:gpt-3.5-turbo-0125:finetune-emulator:unit:"));
    }
    for c in data {
        assert!(str_of(c, "id").starts_with("ftckpt_"));
        assert_eq!(c["metrics"]["type"], "supervised");
        assert_eq!(c["fine_tuning_job_id"], id.as_str());
    }
    assert_eq!(checkpoints["first_id"], data[0]["id"]);
    assert_eq!(checkpoints["last_id"], data[2]["id"]);
    assert_eq!(checkpoints["has_more"], false);

    // The results file: one CSV row per step, with a falling loss.
    let results = job["result_files"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    let results_id = results[0].as_str().unwrap();
    let meta = env.ok_get(&format!("/files/{results_id}")).await;
    assert_eq!(meta["purpose"], "fine-tune-results");
    let csv = env.text(&format!("/files/{results_id}/content")).await;
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy")
    );
    let losses: Vec<f64> = lines
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 100);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    assert!(
        losses[99] < losses[0] / 5.0,
        "{} vs {}",
        losses[0],
        losses[99]
    );
    let epochs: Vec<f64> = losses.chunks(10).map(mean).collect();
    assert!(
        epochs.windows(2).all(|w| w[1] < w[0]),
        "epoch means fall: {epochs:?}"
    );

    // Events: newest first, at non-increasing times, the full story when reversed.
    let events = env.all_events(&id, 1000).await;
    let times: Vec<i64> = events
        .iter()
        .map(|e| e["created_at"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]));
    let metrics: Vec<&Value> = events.iter().filter(|e| e["type"] == "metrics").collect();
    assert_eq!(metrics.len(), 100);
    assert_eq!(metrics[0]["data"]["step"], 100);
    assert_eq!(metrics[0]["data"]["total_steps"], 100);
    assert!(metrics[0]["data"]["train_mean_token_accuracy"].is_f64());
    assert!(metrics[0]["data"].get("valid_loss").is_none());
    let messages: Vec<&str> = events
        .iter()
        .rev()
        .filter(|e| e["type"] == "message")
        .map(|e| str_of(e, "message"))
        .collect();
    assert_eq!(
        messages,
        [
            format!("Created fine-tuning job: {id}"),
            format!("Validating training file: {file}"),
            "Files validated, moving job to queued state".to_owned(),
            "Fine-tuning job started".to_owned(),
            "Checkpoint created at step 80".to_owned(),
            "Checkpoint created at step 90".to_owned(),
            "Checkpoint created at step 100".to_owned(),
            format!("New fine-tuned model created: {model}"),
            "The job has successfully completed".to_owned(),
        ]
    );

    // The new model answers chat and is listed.
    let chat = env
        .ok_post(
            "/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": "ping"}]}),
        )
        .await;
    assert_eq!(chat["model"], model.as_str());
    let models = env.ok_get("/models").await;
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == model.as_str())
    );
    assert_eq!(
        env.ok_get(&format!("/models/{model}")).await["id"],
        model.as_str()
    );
    // A checkpoint is a model too, and training can continue from the new model.
    let ckpt = str_of(&data[1], "fine_tuned_model_checkpoint");
    env.ok_post(
        "/chat/completions",
        json!({"model": ckpt, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let again = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": model, "training_file": file}),
        )
        .await;
    assert_eq!(again["model"], model.as_str());
    env.emu.shutdown().await;
}

#[tokio::test]
async fn validation_file_adds_valid_metrics_and_requested_hyperparameters_hold() {
    let env = start(2000.0).await;
    let train = env.upload_dataset(SAMPLE).await;
    let valid = env.upload_dataset(SAMPLE_VALIDATION).await;
    let created = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": train, "validation_file": valid,
                   "method": {"type": "supervised", "supervised": {"hyperparameters":
                       {"n_epochs": 2, "batch_size": 3, "learning_rate_multiplier": 0.5}}}}),
        )
        .await;
    assert_eq!(created["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(
        created["hyperparameters"],
        json!({"n_epochs": 2, "batch_size": 3, "learning_rate_multiplier": 0.5})
    );
    let id = str_of(&created, "id").to_owned();
    let (job, _) = env.wait_terminal(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // 2 epochs of the emulator's own count; the validation file is not billed.
    let per_epoch = emulator_tokens_per_epoch(&dataset_bytes(SAMPLE), "gpt-4o-mini-2024-07-18");
    assert_eq!(job["trained_tokens"], per_epoch * 2);
    assert_ne!(
        job["trained_tokens"],
        billed_tokens(&dataset_bytes(SAMPLE), "gpt-4o-mini-2024-07-18", Some(2))
    );
    // ceil(10 / 3) = 4 steps per epoch, 2 epochs.
    let events = env.all_events(&id, 100).await;
    let metrics: Vec<&Value> = events.iter().filter(|e| e["type"] == "metrics").collect();
    assert_eq!(metrics.len(), 8);
    assert!(metrics[0]["data"]["valid_loss"].is_f64());
    assert!(metrics[0]["data"]["full_valid_loss"].is_f64(), "epoch end");
    assert!(metrics[1]["data"].get("full_valid_loss").is_none());
    let checkpoints = env
        .ok_get(&format!("/fine_tuning/jobs/{id}/checkpoints"))
        .await;
    let steps: Vec<i64> = checkpoints["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step_number"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [8, 4], "only two epochs to keep");
    let validating = events
        .iter()
        .find(|e| str_of(e, "message").starts_with("Validating"))
        .unwrap();
    assert_eq!(
        validating["message"],
        format!("Validating training file: {train} and validation file: {valid}")
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn five_examples_fail_with_invalid_n_examples() {
    let env = start(1000.0).await;
    let file = env.upload_dataset(TOY).await;
    let created = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini-2024-07-18", "training_file": file}),
        )
        .await;
    let (job, _) = env.wait_terminal(str_of(&created, "id")).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(
        job["error"],
        json!({"code": "invalid_n_examples",
               "message": "Training file has 5 example(s), but must have at least 10 examples",
               "param": "training_file"})
    );
    assert!(job["fine_tuned_model"].is_null());
    assert!(job["trained_tokens"].is_null());
    let events = env.all_events(str_of(&job, "id"), 20).await;
    assert_eq!(events[0]["level"], "error");
    assert_eq!(events[0]["message"], job["error"]["message"]);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn format_errors_fail_with_invalid_file_format() {
    let env = start(1000.0).await;
    let line = r#"{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#;
    let bytes = format!("{}\n", [line; 12].join("\n")).into_bytes();
    let r = env.upload("bad.jsonl", bytes, "fine-tune").await;
    let created = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": r.body["id"]}),
        )
        .await;
    let (job, _) = env.wait_terminal(str_of(&created, "id")).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "invalid_file_format");
    assert_eq!(job["error"]["param"], "training_file");
    let message = str_of(&job["error"], "message");
    assert!(
        message.starts_with("Invalid file format. Line 1"),
        "{message}"
    );

    // A preference file under the supervised method is a format error too.
    let dpo = r#"{"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "a"}], "non_preferred_output": [{"role": "assistant", "content": "b"}]}"#;
    let bytes = format!("{}\n", [dpo; 10].join("\n")).into_bytes();
    let file = env.upload("dpo.jsonl", bytes, "fine-tune").await.body["id"].clone();
    let created = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": file}),
        )
        .await;
    let (job, _) = env.wait_terminal(str_of(&created, "id")).await;
    assert_eq!(job["error"]["code"], "invalid_file_format", "{job}");
    // ...and trains under DPO, with beta resolved.
    let created = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": file,
                   "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1}}}}),
        )
        .await;
    let (job, _) = env.wait_terminal(str_of(&created, "id")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["method"]["type"], "dpo");
    assert_eq!(job["method"]["dpo"]["hyperparameters"]["beta"], 0.1);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn deleting_the_training_file_before_validation_fails_the_job() {
    let env = start(5.0).await;
    let file = env.upload_dataset(SAMPLE).await;
    let created = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": file}),
        )
        .await;
    let deleted = env
        .reply(env.http.delete(env.url(&format!("/files/{file}"))))
        .await;
    assert_eq!(
        deleted.body,
        json!({"object": "file", "deleted": true, "id": file})
    );
    let (job, _) = env.wait_terminal(str_of(&created, "id")).await;
    assert_eq!(
        job["error"],
        json!({"code": "deleted_training_file", "param": "training_file",
               "message": "The job failed because the training file was deleted"})
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn cancel_freezes_the_job_and_a_second_cancel_is_rejected() {
    let env = start(1.0).await;
    let file = env.upload_dataset(SAMPLE).await;
    let created = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-3.5-turbo", "training_file": file}),
        )
        .await;
    let id = str_of(&created, "id").to_owned();
    let cancelled = env
        .ok_post(&format!("/fine_tuning/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["error"], json!({}));
    assert!(cancelled["finished_at"].is_null());
    let again = env.ok_get(&format!("/fine_tuning/jobs/{id}")).await;
    assert_eq!(again["status"], "cancelled");
    let events = env.all_events(&id, 20).await;
    let messages: Vec<&str> = events.iter().map(|e| str_of(e, "message")).collect();
    assert_eq!(
        messages,
        [
            "Fine-tuning job cancelled".to_owned(),
            format!("Validating training file: {file}"),
            format!("Created fine-tuning job: {id}"),
        ]
    );
    let second = env
        .post(&format!("/fine_tuning/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(second.status, StatusCode::BAD_REQUEST);
    assert_eq!(second.body["error"]["type"], "invalid_request_error");
    let unknown = env
        .post("/fine_tuning/jobs/ftjob-nope/cancel", json!({}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn events_page_newest_first_with_after() {
    let env = start(2000.0).await;
    let file = env.upload_dataset(SAMPLE).await;
    let created = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": file,
                   "hyperparameters": {"n_epochs": 2}}),
        )
        .await;
    let id = str_of(&created, "id").to_owned();
    env.wait_terminal(&id).await;
    let all = env.all_events(&id, 1000).await;
    // created, validating, validated, started, 20 steps, 2 checkpoints, model, completed.
    assert_eq!(all.len(), 28);
    for page in [1, 7, 20] {
        assert_eq!(env.all_events(&id, page).await, all, "pages of {page}");
    }
    let first = env
        .ok_get(&format!("/fine_tuning/jobs/{id}/events?limit=1"))
        .await;
    assert_eq!(first["data"][0], all[0]);
    assert_eq!(first["has_more"], true);
    let default_page = env.ok_get(&format!("/fine_tuning/jobs/{id}/events")).await;
    assert_eq!(default_page["data"].as_array().unwrap().len(), 20);
    let last = str_of(&all[27], "id");
    let after_last = env
        .ok_get(&format!("/fine_tuning/jobs/{id}/events?after={last}"))
        .await;
    assert_eq!(after_last["data"], json!([]));
    assert_eq!(after_last["has_more"], false);
    let ids: std::collections::HashSet<&str> = all.iter().map(|e| str_of(e, "id")).collect();
    assert_eq!(ids.len(), all.len(), "event ids are unique");
    assert!(ids.iter().all(|i| i.starts_with("ftevent-")));
    env.emu.shutdown().await;
}

#[tokio::test]
async fn jobs_list_newest_first_pages_and_filters_by_metadata() {
    let env = start(1.0).await;
    let file = env.upload_dataset(SAMPLE).await;
    let mut ids = Vec::new();
    for (i, team) in ["a", "b", "a"].iter().enumerate() {
        let job = env
            .ok_post(
                "/fine_tuning/jobs",
                json!({"model": "gpt-4o-mini", "training_file": file,
                       "metadata": {"team": team, "n": i.to_string()}}),
            )
            .await;
        ids.push(str_of(&job, "id").to_owned());
    }
    let plain = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": file}),
        )
        .await;
    ids.push(str_of(&plain, "id").to_owned());
    let list_ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| str_of(j, "id").to_owned())
            .collect()
    };
    let all = env.ok_get("/fine_tuning/jobs").await;
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(list_ids(&all), newest_first);
    assert_eq!(all["object"], "list");
    assert_eq!(all["has_more"], false);
    let page = env.ok_get("/fine_tuning/jobs?limit=2").await;
    assert_eq!(list_ids(&page), newest_first[..2]);
    assert_eq!(page["has_more"], true);
    let next = env
        .ok_get(&format!(
            "/fine_tuning/jobs?limit=2&after={}",
            newest_first[1]
        ))
        .await;
    assert_eq!(list_ids(&next), newest_first[2..]);
    assert_eq!(next["has_more"], false);
    let team_a = env.ok_get("/fine_tuning/jobs?metadata[team]=a").await;
    assert_eq!(list_ids(&team_a), [ids[2].clone(), ids[0].clone()]);
    let both = env
        .ok_get("/fine_tuning/jobs?metadata%5Bteam%5D=a&metadata%5Bn%5D=0")
        .await;
    assert_eq!(list_ids(&both), [ids[0].clone()]);
    let none = env.ok_get("/fine_tuning/jobs?metadata=null").await;
    assert_eq!(list_ids(&none), [ids[3].clone()]);

    // Metadata limits: 16 pairs, keys <= 64, values <= 512 characters.
    let too_many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    for metadata in [
        Value::Object(too_many),
        json!({"k".repeat(65): "v"}),
        json!({"k": "v".repeat(513)}),
        json!({"k": 1}),
    ] {
        let r = env
            .post(
                "/fine_tuning/jobs",
                json!({"model": "gpt-4o-mini", "training_file": file, "metadata": metadata}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(
            r.body["error"]["param"]
                .as_str()
                .unwrap()
                .starts_with("metadata")
        );
    }
    env.emu.shutdown().await;
}

#[tokio::test]
async fn uploads_in_parts_complete_in_part_order_and_check_size_and_md5() {
    let env = start(1.0).await;
    let bytes = dataset_bytes(SAMPLE);
    let (head, tail) = bytes.split_at(1000);
    let created = env
        .ok_post(
            "/uploads",
            json!({"purpose": "fine-tune", "filename": "train.jsonl", "bytes": bytes.len(),
                   "mime_type": "text/jsonl"}),
        )
        .await;
    let id = str_of(&created, "id").to_owned();
    assert!(id.starts_with("upload_"));
    assert_eq!(created["status"], "pending");
    assert_eq!(
        created["expires_at"].as_i64().unwrap() - created["created_at"].as_i64().unwrap(),
        3600
    );
    assert!(created.get("file").is_none());
    let add = |data: Vec<u8>| {
        let form = reqwest::multipart::Form::new().part(
            "data",
            reqwest::multipart::Part::bytes(data).file_name("blob"),
        );
        env.reply(
            env.http
                .post(env.url(&format!("/uploads/{id}/parts")))
                .multipart(form),
        )
    };
    // Sent out of order; part_ids give the order.
    let second = add(tail.to_vec()).await.body;
    let first = add(head.to_vec()).await.body;
    assert_eq!(second["object"], "upload.part");
    assert_eq!(second["upload_id"], id.as_str());
    assert!(str_of(&first, "id").starts_with("part_"));
    let order = json!([first["id"], second["id"]]);

    let short = env
        .post(
            &format!("/uploads/{id}/complete"),
            json!({"part_ids": [first["id"]]}),
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST, "{}", short.body);
    let wrong_md5 = env
        .post(
            &format!("/uploads/{id}/complete"),
            json!({"part_ids": order, "md5": "00000000000000000000000000000000"}),
        )
        .await;
    assert_eq!(wrong_md5.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong_md5.body["error"]["param"], "md5");

    let md5 = md5_hex(&bytes);
    let done = env
        .ok_post(
            &format!("/uploads/{id}/complete"),
            json!({"part_ids": order, "md5": md5}),
        )
        .await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["file"]["purpose"], "fine-tune");
    assert_eq!(done["file"]["bytes"], bytes.len());
    assert_eq!(done["file"]["status"], "processed");
    let content = env
        .text(&format!("/files/{}/content", str_of(&done["file"], "id")))
        .await;
    assert_eq!(content.as_bytes(), bytes.as_slice());

    let late = add(b"x".to_vec()).await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST);

    let other = env
        .ok_post(
            "/uploads",
            json!({"purpose": "fine-tune", "filename": "x.jsonl", "bytes": 8, "mime_type": "text/jsonl"}),
        )
        .await;
    let other_id = str_of(&other, "id");
    let cancelled = env
        .ok_post(&format!("/uploads/{other_id}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    let r = env
        .post(&format!("/uploads/{other_id}/cancel"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = env
        .post(
            "/uploads",
            json!({"purpose": "fine-tune", "filename": "x.txt", "bytes": 8, "mime_type": "text/plain"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn an_upload_with_expires_after_makes_a_file_that_expires_and_cannot_train() {
    // An hour of emulated time per real second.
    let env = start(3600.0).await;
    let bytes = dataset_bytes(SAMPLE);
    let upload = |expires_after: Value| {
        env.post(
            "/uploads",
            json!({"purpose": "fine-tune", "filename": "train.jsonl", "bytes": bytes.len(),
                   "mime_type": "text/jsonl", "expires_after": expires_after}),
        )
    };
    let bad = upload(json!({"anchor": "last_active_at", "seconds": 3600})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert_eq!(bad.body["error"]["param"], "expires_after.anchor");
    let short = upload(json!({"anchor": "created_at", "seconds": 60})).await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST, "{}", short.body);

    let created = upload(json!({"anchor": "created_at", "seconds": 3600})).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let id = str_of(&created.body, "id").to_owned();
    let form = reqwest::multipart::Form::new().part(
        "data",
        reqwest::multipart::Part::bytes(bytes.clone()).file_name("blob"),
    );
    let part = env
        .reply(
            env.http
                .post(env.url(&format!("/uploads/{id}/parts")))
                .multipart(form),
        )
        .await
        .body;
    let done = env
        .ok_post(
            &format!("/uploads/{id}/complete"),
            json!({"part_ids": [part["id"]]}),
        )
        .await;
    let file = &done["file"];
    assert_eq!(
        file["expires_at"].as_i64(),
        Some(file["created_at"].as_i64().unwrap() + 3600),
        "{file}"
    );
    let file_id = str_of(file, "id").to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.get(&format!("/files/{file_id}")).await.status != StatusCode::NOT_FOUND {
        assert!(
            std::time::Instant::now() < deadline,
            "{file_id} never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let refused = env
        .post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini-2024-07-18", "training_file": file_id}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(refused.body["error"]["param"], "training_file");
    env.emu.shutdown().await;
}

/// MD5 of `data`, computed by the system's `md5sum` so the emulator's own code is not
/// checked against itself.
fn md5_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("md5sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_owned()
}

/// The first recorded response body for `method` on a URL ending with `path_end`.
fn recorded(file: &str, method: &str, path_end: &str) -> Value {
    let path = shared(&format!("recorded/openai-dotnet/{file}"));
    let text = std::fs::read_to_string(&path).unwrap();
    let session: Value = serde_json::from_str(&text).unwrap();
    session["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["RequestMethod"] == method && e["RequestUri"].as_str().unwrap().ends_with(path_end)
        })
        .unwrap_or_else(|| panic!("{file}: no {method} {path_end}"))["ResponseBody"]
        .clone()
}

#[tokio::test]
async fn error_bodies_match_the_recorded_ones() {
    let env = start_with(EmulatorConfig {
        api_key: Some("sk-test-the-right-key-0000000000".to_owned()),
        ..EmulatorConfig::default()
    })
    .await;
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth("sk-test-the-right-key-0000000000");
    let call = |r: reqwest::RequestBuilder| async {
        let response = r.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.json::<Value>().await.unwrap())
    };

    let (status, headers, body) = call(auth(env.http.get(env.url("/files/fake_id")))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        recorded(
            "FilesTests/GetFileCanParseServiceError.json",
            "GET",
            "/files/fake_id"
        )
    );
    assert!(
        headers["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    assert!(headers.contains_key("openai-processing-ms"));
    assert_eq!(headers["openai-version"], "2020-10-01");
    let (_, _, body) = call(auth(env.http.delete(env.url("/files/fake_id")))).await;
    assert_eq!(
        body,
        recorded(
            "FilesTests/DeleteFileCanParseServiceError.json",
            "DELETE",
            "/files/fake_id"
        )
    );

    let sample = {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "fine-tune")
            .part(
                "file",
                reqwest::multipart::Part::bytes(dataset_bytes(SAMPLE)).file_name("s.jsonl"),
            );
        let (_, _, body) = call(auth(env.http.post(env.url("/files")).multipart(form))).await;
        body["id"].as_str().unwrap().to_owned()
    };
    let (status, _, body) =
        call(auth(env.http.post(env.url("/fine_tuning/jobs")).json(
            &json!({"model": "gpt-nonexistent", "training_file": sample}),
        )))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        recorded(
            "FineTuningClientTests/ExceptionThrownOnInvalidModelName.json",
            "POST",
            "/fine_tuning/jobs"
        )
    );
    let (status, _, body) =
        call(auth(env.http.post(env.url("/fine_tuning/jobs")).json(
            &json!({"model": "gpt-3.5-turbo", "training_file": "Invalid File Name"}),
        )))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        recorded(
            "FineTuningClientTests/ExceptionThrownOnInvalidFileName.json",
            "POST",
            "/fine_tuning/jobs"
        )
    );
    let recorded_validation = recorded(
        "FineTuningClientTests/ExceptionThrownOnInvalidValidationIdAsync.json",
        "POST",
        "/fine_tuning/jobs",
    );
    let bad_id = recorded_validation["error"]["message"]
        .as_str()
        .unwrap()
        .trim_start_matches("invalid validation_file: ")
        .to_owned();
    let (_, _, body) = call(auth(env.http.post(env.url("/fine_tuning/jobs")).json(
        &json!({"model": "gpt-3.5-turbo", "training_file": sample, "validation_file": bad_id}),
    )))
    .await;
    assert_eq!(body, recorded_validation);

    let (status, _, body) = call(auth(env.http.get(env.url("/models/fake_id")))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        recorded(
            "ModelsTests/GetModelCanParseServiceError.json",
            "GET",
            "/models/fake_id"
        )
    );

    // A wrong key: the recorded shape, the key masked.
    let wrong = "sk-test-a-wrong-key-with-a-secret-middle";
    let (status, _, body) = call(
        env.http
            .post(env.url("/chat/completions"))
            .bearer_auth(wrong)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let want = recorded("ChatTests/AuthFailure.json", "POST", "/chat/completions");
    assert_eq!(body["error"]["type"], want["error"]["type"]);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(body["error"]["param"].is_null());
    let message = str_of(&body["error"], "message");
    assert!(
        message.starts_with("Incorrect API key provided: sk-test-"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    let (status, _, body) = call(env.http.get(env.url("/models"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["code"].is_null());

    // Request errors keep the envelope's four keys.
    let cases = [
        (json!({"training_file": sample}), Some("model")),
        (json!({"model": "gpt-4o-mini"}), Some("training_file")),
        (
            json!({"model": "gpt-4o-mini", "training_file": sample, "suffix": ""}),
            Some("suffix"),
        ),
        (
            json!({"model": "gpt-4o-mini", "training_file": sample, "suffix": "x".repeat(65)}),
            Some("suffix"),
        ),
        (
            json!({"model": "gpt-4o-mini", "training_file": sample, "seed": -1}),
            Some("seed"),
        ),
        (
            json!({"model": "gpt-4o-mini", "training_file": sample,
                "hyperparameters": {"n_epochs": 51}}),
            Some("hyperparameters.n_epochs"),
        ),
        (
            json!({"model": "gpt-4o-mini", "training_file": sample,
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 0}}}}),
            Some("method.supervised.hyperparameters.batch_size"),
        ),
        (
            json!({"model": "gpt-4o-mini", "training_file": sample,
                "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}}),
            Some("method.dpo.hyperparameters.beta"),
        ),
        (
            json!({"model": "gpt-4o-mini", "training_file": sample, "method": {"type": "magic"}}),
            Some("method.type"),
        ),
        (
            json!({"model": "gpt-4o-mini", "training_file": sample, "colour": "blue"}),
            None,
        ),
    ];
    for (body, param) in cases {
        let (status, _, reply) = call(auth(
            env.http.post(env.url("/fine_tuning/jobs")).json(&body),
        ))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
        let error = reply["error"].as_object().unwrap();
        let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["code", "message", "param", "type"], "{reply}");
        assert_eq!(error["param"].as_str(), param, "{body}: {reply}");
    }
    let (status, _, body) = call(auth(
        env.http
            .post(env.url("/fine_tuning/jobs"))
            .header("content-type", "application/json")
            .body("{not json"),
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(str_of(&body["error"], "message").starts_with("We could not parse the JSON body"));
    let (status, _, body) = call(auth(env.http.get(env.url("/nope")))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "Invalid URL (GET /v1/nope)");
    let form = reqwest::multipart::Form::new()
        .text("purpose", "fine-tune")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"{}".to_vec()).file_name("notes.txt"),
        );
    let (status, _, body) = call(auth(env.http.post(env.url("/files")).multipart(form))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["message"],
        "Invalid file format for Fine-Tuning API. Must be .jsonl"
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn files_list_get_content_and_delete() {
    let env = start(1.0).await;
    let a = env.upload_dataset(SAMPLE).await;
    let b = env
        .upload("notes.txt", b"hello".to_vec(), "assistants")
        .await
        .body;
    assert_eq!(b["purpose"], "assistants");
    assert_eq!(b["bytes"], 5);
    assert!(b["expires_at"].is_null());
    assert!(b["status_details"].is_null());
    let list = env.ok_get("/files").await;
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let tuned = env.ok_get("/files?purpose=fine-tune").await;
    assert_eq!(tuned["data"][0]["id"], a.as_str());
    assert_eq!(tuned["first_id"], a.as_str());
    assert_eq!(tuned["last_id"], a.as_str());
    assert_eq!(
        env.text(&format!("/files/{a}/content")).await.as_bytes(),
        dataset_bytes(SAMPLE).as_slice()
    );
    let gone = env
        .reply(env.http.delete(env.url(&format!("/files/{a}"))))
        .await;
    assert_eq!(gone.status, StatusCode::OK);
    assert_eq!(
        env.get(&format!("/files/{a}")).await.status,
        StatusCode::NOT_FOUND
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn chat_counts_tokens_truncates_and_stops() {
    let env = start(1.0).await;
    let hello = env
        .ok_post(
            "/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello, world!"}]}),
        )
        .await;
    let recorded = recorded("ChatTests/HelloWorldChat.json", "POST", "/chat/completions");
    assert_eq!(hello["model"], recorded["model"]);
    assert_eq!(
        hello["usage"]["prompt_tokens"],
        recorded["usage"]["prompt_tokens"]
    );
    assert!(str_of(&hello, "id").starts_with("chatcmpl-"));
    assert_eq!(hello["object"], "chat.completion");
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    let mut got = keys(&hello);
    let mut want = keys(&recorded);
    got.sort();
    want.sort();
    assert_eq!(got, want, "same top-level fields as the recorded response");
    assert_eq!(
        keys(&hello["choices"][0]["message"]),
        keys(&recorded["choices"][0]["message"])
    );
    let content = str_of(&hello["choices"][0]["message"], "content");
    assert!(content.contains("gpt-4o-mini-2024-07-18") && content.contains("Hello, world!"));
    assert_eq!(hello["choices"][0]["finish_reason"], "stop");
    let usage = &hello["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );

    let short = env
        .ok_post(
            "/chat/completions",
            json!({"model": "gpt-4o-mini", "max_completion_tokens": 3,
                   "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(short["choices"][0]["finish_reason"], "length");
    assert_eq!(short["usage"]["completion_tokens"], 3);
    assert!(content.starts_with(str_of(&short["choices"][0]["message"], "content")));
    let stopped = env
        .ok_post(
            "/chat/completions",
            json!({"model": "gpt-4o-mini", "stop": [" no model"], "n": 2,
                   "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(stopped["choices"].as_array().unwrap().len(), 2);
    assert_eq!(stopped["choices"][1]["index"], 1);
    let text = str_of(&stopped["choices"][0]["message"], "content");
    assert!(
        !text.contains("no model") && text.ends_with("FineTune:"),
        "{text}"
    );
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");

    let missing = env
        .post(
            "/chat/completions",
            json!({"model": "ft:gpt-4o-mini-2024-07-18:org::nope1234", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["error"]["code"], "model_not_found");
    let empty = env
        .post(
            "/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": []}),
        )
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(empty.body["error"]["code"], "empty_array");
    env.emu.shutdown().await;
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
                .to_owned()
        })
        .collect()
}

async fn stream_text(env: &Env, body: Value) -> (StatusCode, HeaderMap, String) {
    let response = env
        .http
        .post(env.url("/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn streamed_chat_follows_the_recorded_chunk_sequence() {
    let env = start(100.0).await;
    let request = json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
                         "messages": [{"role": "user", "content": "What are the best pizza toppings?"}]});
    let (status, headers, text) = stream_text(&env, request.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    let n = chunks.len();
    let finish = &chunks[n - 2];
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[n - 1];
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    for c in &chunks[..n - 1] {
        assert!(c["usage"].is_null() && c.get("usage").is_some(), "{c}");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    for c in &chunks {
        assert!(c["obfuscation"].is_string(), "{c}");
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    let streamed: String = chunks[1..n - 2]
        .iter()
        .map(|c| {
            assert!(c["choices"][0]["finish_reason"].is_null());
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() as usize,
        n - 3,
        "one chunk per token"
    );
    let mut plain = request.clone();
    plain.as_object_mut().unwrap().remove("stream");
    plain.as_object_mut().unwrap().remove("stream_options");
    let whole = env.ok_post("/chat/completions", plain).await;
    assert_eq!(whole["choices"][0]["message"]["content"], streamed.as_str());
    assert_eq!(whole["usage"], usage["usage"]);

    // Without include_usage there is no usage key and no usage chunk; obfuscation can be off.
    let (_, _, text) = stream_text(
        &env,
        json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_obfuscation": false},
               "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let events = sse_data(&text);
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        assert!(
            c.get("usage").is_none() && c.get("obfuscation").is_none(),
            "{c}"
        );
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
    env.emu.shutdown().await;
}

#[tokio::test]
async fn rate_limit_fault_answers_429_with_retry_after_then_recovers() {
    let env = start(1.0).await;
    let r = env
        .http
        .post(env.admin("/_emulator/faults"))
        .json(&json!({"route": "GET /v1/models", "times": 2, "kind": "rate_limit", "retry_after_ms": 1500}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let state: Value = r.json().await.unwrap();
    assert_eq!(state["rules"][0]["times"], 2);
    for _ in 0..2 {
        let r = env.get("/models").await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers["retry-after"], "2");
        assert_eq!(r.headers["retry-after-ms"], "1500");
        assert_eq!(r.body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(r.body["error"]["type"], "requests");
    }
    assert_eq!(env.get("/models").await.status, StatusCode::OK);
    // Other routes were never affected; the rule is used up.
    assert!(env.emu.faults().pending().is_empty());
    env.emu.shutdown().await;
}

#[tokio::test]
async fn lost_response_creates_the_job_but_the_client_sees_no_answer() {
    let env = start(1.0).await;
    let file = env.upload_dataset(SAMPLE).await;
    env.emu
        .faults()
        .inject("POST /v1/fine_tuning/jobs", Fault::LostResponse, 1);
    let sent = env
        .http
        .post(env.url("/fine_tuning/jobs"))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-4o-mini", "training_file": file}))
        .send()
        .await;
    assert!(sent.is_err(), "the response must be lost: {sent:?}");
    let jobs = env.ok_get("/fine_tuning/jobs").await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 1, "the job exists");

    // A dropped connection does no work at all.
    env.emu
        .faults()
        .inject("POST /v1/fine_tuning/jobs", Fault::DropConnection, 1);
    let sent = env
        .http
        .post(env.url("/fine_tuning/jobs"))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-4o-mini", "training_file": file}))
        .send()
        .await;
    assert!(sent.is_err());
    let jobs = env.ok_get("/fine_tuning/jobs").await;
    assert_eq!(jobs["data"].as_array().unwrap().len(), 1, "no second job");
    assert_eq!(env.emu.stats().count("POST /v1/fine_tuning/jobs"), 2);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn truncated_stream_stops_without_done() {
    let env = start(100.0).await;
    let request = json!({"model": "gpt-4o-mini", "stream": true,
                         "messages": [{"role": "user", "content": "Tell me a long story"}]});
    env.emu.faults().inject(
        "POST /v1/chat/completions",
        Fault::TruncateStream {
            after_chunks: 3,
            abort: false,
        },
        1,
    );
    let (status, _, text) = stream_text(&env, request.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_data(&text);
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e != "[DONE]"));

    env.emu.faults().inject(
        "POST /v1/chat/completions",
        Fault::TruncateStream {
            after_chunks: 2,
            abort: true,
        },
        1,
    );
    let response = env
        .http
        .post(env.url("/chat/completions"))
        .bearer_auth(KEY)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert!(response.text().await.is_err(), "the body breaks off");

    let (_, _, text) = stream_text(&env, request).await;
    assert_eq!(sse_data(&text).last().map(String::as_str), Some("[DONE]"));
    env.emu.shutdown().await;
}

#[tokio::test]
async fn server_errors_latency_malformed_json_and_outages() {
    let env = start(1.0).await;
    let faults = env.emu.faults();
    faults.inject("GET /v1/models", Fault::ServerError, 1);
    faults.inject("GET /v1/models", Fault::Unavailable, 1);
    faults.inject("GET /v1/models", Fault::Latency { ms: 300 }, 1);
    faults.inject("GET /v1/models", Fault::MalformedJson, 1);
    let r = env.get("/models").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.body["error"]["type"], "server_error");
    assert_eq!(
        env.get("/models").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let t = Instant::now();
    assert_eq!(env.get("/models").await.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let broken = env
        .http
        .get(env.url("/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), StatusCode::OK);
    let bytes = broken.bytes().await.unwrap();
    assert!(!bytes.is_empty() && serde_json::from_slice::<Value>(&bytes).is_err());

    let r = env
        .http
        .post(env.admin("/_emulator/faults"))
        .json(&json!({"upstream_down_ms": 400}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let down = env.get("/fine_tuning/jobs").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(down.headers.contains_key("retry-after"));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(env.get("/fine_tuning/jobs").await.status, StatusCode::OK);

    faults.inject("*", Fault::ServerError, 5);
    let cleared = env
        .http
        .delete(env.admin("/_emulator/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        cleared.json::<Value>().await.unwrap(),
        json!({"rules": [], "upstream_down_remaining_ms": null})
    );
    assert_eq!(env.get("/models").await.status, StatusCode::OK);
    let bad = env
        .http
        .post(env.admin("/_emulator/faults"))
        .json(&json!({"kind": "explode"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn stats_count_requests_by_route_template() {
    let env = start(1.0).await;
    let file = env.upload_dataset(SAMPLE).await;
    let job = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": file}),
        )
        .await;
    let id = str_of(&job, "id");
    env.ok_get(&format!("/fine_tuning/jobs/{id}")).await;
    env.ok_get(&format!("/fine_tuning/jobs/{id}")).await;
    env.ok_get(&format!("/fine_tuning/jobs/{id}/events")).await;
    let _ = env.get("/files/file-missing").await;
    let _ = env.get("/nowhere").await;
    let wrong_method = env.reply(env.http.put(env.url("/files"))).await;
    assert_eq!(wrong_method.status, StatusCode::NOT_FOUND);
    assert_eq!(
        wrong_method.body["error"]["message"],
        "Invalid URL (PUT /v1/files)"
    );
    let stats = env.emu.stats();
    assert_eq!(stats.count("POST /v1/files"), 1);
    assert_eq!(stats.count("POST /v1/fine_tuning/jobs"), 1);
    assert_eq!(stats.count("GET /v1/fine_tuning/jobs/{id}"), 2);
    assert_eq!(stats.count("GET /v1/fine_tuning/jobs/{id}/events"), 1);
    assert_eq!(stats.count("GET /v1/files/{id}"), 1);
    assert_eq!(stats.count("GET /v1/nowhere"), 1);
    assert_eq!(stats.count("PUT /v1/files"), 1);
    assert_eq!(stats.total, 8);
    let over_http: Value = env
        .http
        .get(env.admin("/_emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http, serde_json::to_value(&stats).unwrap());
    assert_eq!(env.emu.stats(), stats, "admin requests are not counted");
    env.emu.shutdown().await;
}

// ---- The spec's response schemas ----

/// The spec's `components.schemas`, made valid JSON Schema 2020-12 and relaxed only where
/// recorded real traffic departs from it.
fn spec_schemas() -> Value {
    let text = std::fs::read_to_string(shared("openai-openapi-finetuning.yaml")).unwrap();
    // `seed` bounds of +-9223372036854776000 overflow i64: read them as floats.
    let text = text.replace("9223372036854776000", "9.223372036854776e18");
    let spec: Value = serde_norway::from_str(&text).unwrap();
    let mut schemas = spec["components"]["schemas"].clone();
    to_json_schema(&mut schemas);
    // Recorded files (FilesTests/*) carry `expires_at: null` and `status_details: null`.
    for field in ["expires_at", "status_details"] {
        nullable(&mut schemas["OpenAIFile"]["properties"][field]);
    }
    // Every recorded healthy job (FineTuningClientTests/*) has `error: {}`.
    schemas["FineTuningJob"]["properties"]["error"]["anyOf"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "object", "maxProperties": 0}));
    schemas
}

fn nullable(schema: &mut Value) {
    let inner = schema.take();
    *schema = json!({"anyOf": [inner, {"type": "null"}]});
}

/// OpenAPI 3.0 leftovers in the 3.1 spec: `nullable: true` and boolean
/// `exclusiveMinimum`/`exclusiveMaximum`.
fn to_json_schema(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(to_json_schema),
        Value::Object(map) => {
            for (_, child) in map.iter_mut() {
                to_json_schema(child);
            }
            for (flag, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(Value::Bool(on)) = map.get(flag).cloned() {
                    map.remove(flag);
                    if on {
                        if let Some(b) = map.remove(bound) {
                            map.insert(flag.to_owned(), b);
                        }
                    }
                }
            }
            if map.get("nullable") == Some(&Value::Bool(true)) {
                map.remove("nullable");
                let inner = Value::Object(std::mem::take(map));
                map.insert("anyOf".to_owned(), json!([inner, {"type": "null"}]));
            }
        }
        _ => {}
    }
}

struct SchemaCheck {
    schemas: Value,
    validators: std::collections::HashMap<String, jsonschema::Validator>,
}

impl SchemaCheck {
    fn new() -> SchemaCheck {
        SchemaCheck {
            schemas: spec_schemas(),
            validators: Default::default(),
        }
    }

    fn accepts(&mut self, name: &str, instance: &Value) -> bool {
        self.validator(name).is_valid(instance)
    }

    fn validator(&mut self, name: &str) -> &jsonschema::Validator {
        let schemas = &self.schemas;
        self.validators.entry(name.to_owned()).or_insert_with(|| {
            let root = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$ref": format!("#/components/schemas/{name}"),
                "components": {"schemas": schemas},
            });
            jsonschema::draft202012::new(&root)
                .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"))
        })
    }

    fn check(&mut self, name: &str, instance: &Value) {
        let validator = self.validator(name);
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{name} rejects {instance}:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn recorded_openai_responses_validate_against_the_relaxed_schemas() {
    let mut check = SchemaCheck::new();
    let dir = shared("recorded/openai-dotnet");
    let mut checked = 0;
    for group in std::fs::read_dir(&dir).unwrap() {
        for file in std::fs::read_dir(group.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let session: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for e in session["Entries"].as_array().unwrap() {
                let method = e["RequestMethod"].as_str().unwrap();
                let uri = e["RequestUri"].as_str().unwrap();
                let path_only = uri
                    .trim_start_matches("https://api.openai.com/v1")
                    .split('?')
                    .next()
                    .unwrap();
                let body = &e["ResponseBody"];
                if e["StatusCode"].as_u64() != Some(200) {
                    check.check("ErrorResponse", body);
                    checked += 1;
                    continue;
                }
                let schema = schema_for(method, path_only);
                if schema == "CreateChatCompletionResponse" && body.is_array() {
                    for event in body.as_array().unwrap() {
                        let data = event.as_str().unwrap().trim_start_matches("data: ").trim();
                        if data != "[DONE]" {
                            let chunk: Value = serde_json::from_str(data).unwrap();
                            check.check("CreateChatCompletionStreamResponse", &chunk);
                        }
                    }
                } else {
                    check.check(schema, body);
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 35, "checked only {checked} responses");
    // The schemas have teeth: a job without its seed, or with an unknown status, fails.
    let mut job = recorded(
        "FineTuningClientTests/MinimalRequiredParams.json",
        "POST",
        "/fine_tuning/jobs",
    );
    check.check("FineTuningJob", &job);
    job["status"] = json!("paused");
    assert!(!check.accepts("FineTuningJob", &job));
    job.as_object_mut().unwrap().remove("seed");
    job["status"] = json!("queued");
    assert!(!check.accepts("FineTuningJob", &job));
    assert!(!check.accepts("ErrorResponse", &json!({"error": {"message": "m"}})));
}

/// The schema of a 200 response, by method and path.
fn schema_for(method: &str, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["files"]) | ("GET", ["files", _]) => "OpenAIFile",
        ("GET", ["files"]) => "ListFilesResponse",
        ("DELETE", ["files", _]) => "DeleteFileResponse",
        ("POST", ["uploads"]) | ("POST", ["uploads", _, "complete" | "cancel"]) => "Upload",
        ("POST", ["uploads", _, "parts"]) => "UploadPart",
        ("POST", ["fine_tuning", "jobs"])
        | ("GET", ["fine_tuning", "jobs", _])
        | ("POST", ["fine_tuning", "jobs", _, "cancel"]) => "FineTuningJob",
        ("GET", ["fine_tuning", "jobs"]) => "ListPaginatedFineTuningJobsResponse",
        ("GET", ["fine_tuning", "jobs", _, "events"]) => "ListFineTuningJobEventsResponse",
        ("GET", ["fine_tuning", "jobs", _, "checkpoints"]) => {
            "ListFineTuningJobCheckpointsResponse"
        }
        ("POST", ["chat", "completions"]) => "CreateChatCompletionResponse",
        other => panic!("no schema for {other:?}"),
    }
}

#[tokio::test]
async fn emulator_responses_validate_against_the_spec_schemas() {
    let mut check = SchemaCheck::new();
    let env = start(1000.0).await;

    // Files and uploads.
    let upload = env.upload(SAMPLE, dataset_bytes(SAMPLE), "fine-tune").await;
    check.check("OpenAIFile", &upload.body);
    let file = str_of(&upload.body, "id").to_owned();
    let valid = env.upload_dataset(SAMPLE_VALIDATION).await;
    check.check("ListFilesResponse", &env.ok_get("/files").await);
    check.check("OpenAIFile", &env.ok_get(&format!("/files/{file}")).await);
    let pending = env
        .ok_post(
            "/uploads",
            json!({"purpose": "fine-tune", "filename": "u.jsonl", "bytes": 2, "mime_type": "text/jsonl"}),
        )
        .await;
    check.check("Upload", &pending);
    let upload_id = str_of(&pending, "id").to_owned();
    let form = reqwest::multipart::Form::new()
        .part("data", reqwest::multipart::Part::bytes(b"{}".to_vec()));
    let part = env
        .reply(
            env.http
                .post(env.url(&format!("/uploads/{upload_id}/parts")))
                .multipart(form),
        )
        .await
        .body;
    check.check("UploadPart", &part);
    let done = env
        .ok_post(
            &format!("/uploads/{upload_id}/complete"),
            json!({"part_ids": [part["id"]]}),
        )
        .await;
    check.check("Upload", &done);
    let other = env
        .ok_post(
            "/uploads",
            json!({"purpose": "batch", "filename": "b.jsonl", "bytes": 2, "mime_type": "text/jsonl"}),
        )
        .await;
    check.check(
        "Upload",
        &env.ok_post(
            &format!("/uploads/{}/cancel", str_of(&other, "id")),
            json!({}),
        )
        .await,
    );
    let deleted = env
        .reply(
            env.http
                .delete(env.url(&format!("/files/{}", str_of(&done["file"], "id")))),
        )
        .await;
    check.check("DeleteFileResponse", &deleted.body);

    // Jobs in every state.
    let created = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": file, "validation_file": valid,
                   "suffix": "schema", "metadata": {"k": "v"},
                   "integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}),
        )
        .await;
    check.check("FineTuningJob", &created);
    let id = str_of(&created, "id").to_owned();
    let mut statuses = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = env.ok_get(&format!("/fine_tuning/jobs/{id}")).await;
        check.check("FineTuningJob", &job);
        let status = str_of(&job, "status").to_owned();
        if status == "running" {
            check.check(
                "ListFineTuningJobCheckpointsResponse",
                &env.ok_get(&format!("/fine_tuning/jobs/{id}/checkpoints"))
                    .await,
            );
        }
        statuses.insert(status.clone());
        if status == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(statuses.contains("running"), "{statuses:?}");
    let toy = env.upload_dataset(TOY).await;
    let failing = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": toy}),
        )
        .await;
    let (failed, _) = env.wait_terminal(str_of(&failing, "id")).await;
    check.check("FineTuningJob", &failed);
    let to_cancel = env
        .ok_post(
            "/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": file,
                   "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}}),
        )
        .await;
    check.check("FineTuningJob", &to_cancel);
    check.check(
        "FineTuningJob",
        &env.ok_post(
            &format!("/fine_tuning/jobs/{}/cancel", str_of(&to_cancel, "id")),
            json!({}),
        )
        .await,
    );
    check.check(
        "ListPaginatedFineTuningJobsResponse",
        &env.ok_get("/fine_tuning/jobs").await,
    );
    check.check(
        "ListFineTuningJobEventsResponse",
        &env.ok_get(&format!("/fine_tuning/jobs/{id}/events?limit=1000"))
            .await,
    );
    check.check(
        "ListFineTuningJobCheckpointsResponse",
        &env.ok_get(&format!("/fine_tuning/jobs/{id}/checkpoints"))
            .await,
    );

    // Chat, plain and streamed.
    check.check(
        "CreateChatCompletionResponse",
        &env.ok_post(
            "/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await,
    );
    let (_, _, text) = stream_text(
        &env,
        json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    for data in sse_data(&text).iter().filter(|d| *d != "[DONE]") {
        check.check(
            "CreateChatCompletionStreamResponse",
            &serde_json::from_str(data).unwrap(),
        );
    }

    // Errors.
    for body in [
        env.get("/files/nope").await.body,
        env.get("/models/nope").await.body,
        env.post("/fine_tuning/jobs", json!({"model": "x"}))
            .await
            .body,
        env.get("/nope").await.body,
    ] {
        check.check("ErrorResponse", &body);
    }
    env.emu.shutdown().await;
}
