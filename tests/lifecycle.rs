//! The training lifecycle end to end: the CLI through the server, adapter and emulator;
//! one poller for many watchers; a lost create response; a server killed mid-job.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use finetune::pb;
use finetune::pb::watch_job_response::Item;
use finetune_emulator::{Emulator, Fault};
use tokio_stream::StreamExt;

/// A server that talks to `emulator` as if it were OpenAI.
async fn server_for(emulator: &Emulator, poll: f64) -> TestServer {
    let base = emulator.base_url();
    TestServer::start_with(move |c| {
        c.openai_base_url = Some(base);
        c.openai_api_key = Some("sk-test-lifecycle".into());
        c.poll_interval_seconds = Some(poll);
        c.heartbeat_seconds = 0.5;
    })
    .await
}

fn start_request(request_id: &str) -> pb::StartTrainingRequest {
    common::StartTraining::new(request_id)
        .dataset(common::reference_dataset(
            "openai-dotnet_fine_tuning_sample.jsonl",
        ))
        .file_name("sample.jsonl")
        .model("gpt-4o-mini")
        .build()
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn sequences(lines: &[serde_json::Value]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l["event"]["sequence"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_trains_and_watches_a_job_to_its_model() {
    let emulator = common::emulator(300.0).await;
    let server = server_for(&emulator, 0.05).await;
    let addr = server.addr.to_string();
    let sample = common::repo_file("examples/training-data.jsonl");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_finetune"))
            .args([
                "train",
                sample.to_str().unwrap(),
                "--yes",
                "--watch",
                "--json",
                "--suffix",
                "fe",
                "--request-id",
                "cli-1",
            ])
            .env("FINETUNE_ADDR", &addr)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    let job = &lines[0]["job"];
    assert_eq!(job["request_id"], "cli-1");
    assert!(lines[1].get("snapshot").is_some());
    let seqs = sequences(&lines);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let done = &lines.last().unwrap()["event"]["job"];
    assert_eq!(done["state"], "succeeded");
    let model = done["fine_tuned_model"].as_str().unwrap();
    assert!(
        model.starts_with("ft:gpt-4o-2024-08-06:") && model.contains(":fe:"),
        "{model}"
    );
    // The job carries the tokens OpenAI (here the emulator, counting by its own rule)
    // reported, priced from the catalog, beside the validator's estimate, which it need not
    // equal.
    let tokens = done["trained_tokens"].as_u64().unwrap();
    let upstream: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/fine_tuning/jobs/{}",
            emulator.base_url(),
            done["upstream_id"].as_str().unwrap()
        ))
        .bearer_auth("sk-test-lifecycle")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(upstream["trained_tokens"].as_u64(), Some(tokens));
    let cost = done["actual_cost_usd"].as_f64().unwrap();
    assert!((cost - tokens as f64 * 25.0 / 1e6).abs() < 1e-9);
    let estimated = done["estimated_tokens"].as_u64().unwrap();
    assert_eq!(
        estimated, 123_844,
        "the validator's figure for this file (README)"
    );
    assert!(
        (done["estimated_cost_usd"].as_f64().unwrap() - estimated as f64 * 25.0 / 1e6).abs() < 1e-9
    );
    assert_ne!(tokens, estimated, "the emulator does not echo the estimate");

    // `finetune watch` on the finished job ends with the actual figures beside the estimate
    // and how far apart they are, never as if they had to match.
    let id = job["id"].as_str().unwrap().to_owned();
    let watch_addr = server.addr.to_string();
    let watched = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_finetune"))
            .args(["watch", &id])
            .env("FINETUNE_ADDR", &watch_addr)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(watched.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&watched.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let change = (tokens as f64 - estimated as f64) / estimated as f64 * 100.0;
    let want = format!(
        "succeeded: {model} (trained {} tokens, ${cost:.2}; estimate 123,844 tokens, $3.10: {change:+.1}%)",
        finetune_core::dataset::render::thousands(tokens)
    );
    assert_eq!(last, want, "{stdout}");

    let addr = server.addr.to_string();
    let listed = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_finetune"))
            .args(["jobs", "--json"])
            .env("FINETUNE_ADDR", &addr)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let jobs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(jobs["jobs"][0]["fine_tuned_model"], model);
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_watchers_share_one_poller() {
    let emulator = common::emulator(40.0).await;
    let poll = 0.25;
    let server = server_for(&emulator, poll).await;
    let job = server.start_job(start_request("many")).await;
    let began = Instant::now();
    let gets_before = emulator.stats().count("GET /v1/fine_tuning/jobs/{id}");
    let mut watchers = Vec::new();
    for _ in 0..100 {
        let mut client = server.client();
        let id = job.id.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = client
                .watch_job(pb::WatchJobRequest {
                    job_id: id,
                    after_sequence: 0,
                })
                .await
                .unwrap()
                .into_inner();
            let mut seqs = Vec::new();
            while let Some(item) = stream.next().await {
                if let Some(Item::Event(e)) = item.unwrap().item {
                    seqs.push(e.sequence);
                }
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for w in watchers {
        all.push(
            tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .expect("watchers finish")
                .unwrap(),
        );
    }
    let elapsed = began.elapsed().as_secs_f64();
    let gets = emulator.stats().count("GET /v1/fine_tuning/jobs/{id}") - gets_before;
    assert!(
        all.iter().all(|s| *s == all[0]),
        "every watcher saw the same events"
    );
    assert_eq!(all[0], (1..=all[0].len() as u64).collect::<Vec<_>>());
    let polls_allowed = (elapsed / poll).ceil() as u64 + 2;
    assert!(
        gets <= polls_allowed,
        "{gets} job polls in {elapsed:.1}s at one per {poll}s (100 watchers)"
    );
    assert!(gets >= 2);
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_response_adopts_the_job_instead_of_creating_another() {
    let emulator = common::emulator(300.0).await;
    let server = server_for(&emulator, 0.05).await;
    emulator
        .faults()
        .inject("POST /v1/fine_tuning/jobs", Fault::LostResponse, 1);
    let job = server.start_job(start_request("lost")).await;
    assert!(job.upstream_id.starts_with("ftjob-"));
    assert_eq!(
        emulator.stats().count("POST /v1/fine_tuning/jobs"),
        1,
        "created once"
    );
    // A retry of the same request returns the same job and creates nothing.
    let again = server.start_job(start_request("lost")).await;
    assert_eq!(again.id, job.id);
    assert_eq!(emulator.stats().count("POST /v1/fine_tuning/jobs"), 1);
    server.stop().await;
    emulator.shutdown().await;
}

/// Reads `finetune serve`'s start line; returns the child.
fn spawn_server(addr: &str, data_dir: &std::path::Path, base_url: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args([
            "serve",
            "--poll-interval-seconds",
            "0.1",
            "--heartbeat-seconds",
            "0.5",
        ])
        .env("FINETUNE_ADDR", addr)
        .env("FINETUNE_DATA_DIR", data_dir)
        .env("OPENAI_BASE_URL", base_url)
        .env("OPENAI_API_KEY", "sk-test-restart")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::start_line(&mut child, None);
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_polling_and_the_cli_watcher_resumes_without_loss() {
    let emulator = common::emulator(15.0).await;
    let data_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = spawn_server(&addr, data_dir.path(), &emulator.base_url());

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::fine_tune_service_client::FineTuneServiceClient::new(channel);
    let job = client
        .start_training(start_request("restart"))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();

    let watch_addr = addr.clone();
    let job_id = job.id.clone();
    let watcher = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_finetune"))
            .args(["watch", &job_id, "--json"])
            .env("FINETUNE_ADDR", &watch_addr)
            .output()
            .unwrap()
    });
    // Let some events through, then kill the server without a chance to clean up.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut server = spawn_server(&addr, data_dir.path(), &emulator.base_url());

    let out = tokio::time::timeout(Duration::from_secs(90), watcher)
        .await
        .expect("the watcher finishes")
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    let seqs = sequences(&lines);
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no event lost or repeated across the restart"
    );
    assert_eq!(lines.last().unwrap()["event"]["job"]["state"], "succeeded");
    assert_eq!(emulator.stats().count("POST /v1/fine_tuning/jobs"), 1);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_strip_our_metadata_and_happen_once_per_content() {
    let emulator = common::emulator(300.0).await;
    let server = server_for(&emulator, 0.05).await;
    let request = |id: &str, suffix: &str| {
        common::StartTraining::new(id)
            .model("")
            .suffix(suffix)
            .build()
    };
    let first = server.start_job(request("a", "one")).await;
    let second = server.start_job(request("b", "two")).await;
    assert_ne!(first.id, second.id);
    assert_eq!(
        first.training_file_id, second.training_file_id,
        "the same bytes are uploaded once"
    );
    assert_eq!(emulator.stats().count("POST /v1/files"), 1);

    let content = reqwest::Client::new()
        .get(format!(
            "{}/files/{}/content",
            emulator.base_url(),
            first.training_file_id
        ))
        .bearer_auth("sk-test-lifecycle")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = content
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 13);
    assert!(
        lines
            .iter()
            .all(|l| l.get("metadata").is_none() && l.get("messages").is_some()),
        "metadata is ours: not sent"
    );
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_outside_the_service_is_adopted_by_its_openai_id() {
    let emulator = common::emulator(300.0).await;
    let server = server_for(&emulator, 0.05).await;
    let http = reqwest::Client::new();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "fine-tune")
        .part(
            "file",
            reqwest::multipart::Part::bytes(common::reference_dataset(
                "openai-dotnet_fine_tuning_sample.jsonl",
            ))
            .file_name("outside.jsonl"),
        );
    let file: serde_json::Value = http
        .post(format!("{}/files", emulator.base_url()))
        .bearer_auth("sk-outside")
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created: serde_json::Value = http
        .post(format!("{}/fine_tuning/jobs", emulator.base_url()))
        .bearer_auth("sk-outside")
        .json(&serde_json::json!({"model": "gpt-4o-mini", "training_file": file["id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let upstream_id = created["id"].as_str().unwrap().to_owned();

    let adopted = server
        .client()
        .get_job(pb::GetJobRequest {
            job_id: upstream_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(adopted.upstream_id, upstream_id);
    assert!(adopted.request_id.is_empty());
    let items = server
        .watch_to_end(&upstream_id, 0, Duration::from_secs(30))
        .await;
    assert_eq!(
        common::events(&items).pop().unwrap().job.unwrap().state,
        pb::JobState::Succeeded as i32
    );
    // Adopted once: asking again finds the same job.
    let again = server
        .client()
        .get_job(pb::GetJobRequest {
            job_id: upstream_id,
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(again.id, adopted.id);
    server.stop().await;
    emulator.shutdown().await;
}

#[test]
fn train_asks_before_spending_and_refuses_silently_without_a_terminal() {
    let sample = common::repo_file("examples/training-data.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args(["train", sample.to_str().unwrap(), "--addr", "127.0.0.1:9"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--yes"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("estimated $"),
        "the estimate is shown first: {stdout}"
    );

    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "{\"messages\": []}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args([
            "train",
            bad.path().to_str().unwrap(),
            "--yes",
            "--addr",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a dataset with errors is never sent"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was started"));
}

/// OpenAI takes at most 16 metadata pairs on a job and the service writes two of its own,
/// so a caller may set 14: they reach OpenAI beside the service's keys, and a 15th is
/// refused before anything is uploaded, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_takes_fourteen_metadata_pairs_beside_the_services_two() {
    use tonic_types::StatusExt;
    let emulator = common::emulator(300.0).await;
    let server = server_for(&emulator, 1.0).await;
    let upstream = |path: String| {
        let url = format!("{}{path}", emulator.base_url());
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth("sk-test-lifecycle")
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let pairs = |n: usize| -> std::collections::HashMap<String, String> {
        (0..n)
            .map(|i| (format!("key{i:02}"), format!("value {i}")))
            .collect()
    };

    let mut over = start_request("meta-15");
    over.metadata = pairs(15);
    let err = server.client().start_training(over).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let details = err.get_error_details();
    let violation = &details
        .bad_request()
        .expect("a BadRequest")
        .field_violations[0];
    assert_eq!(violation.field, "metadata");
    assert!(
        violation.description.contains("at most 14"),
        "{}",
        violation.description
    );
    let listed = upstream("/fine_tuning/jobs".to_owned()).await;
    assert_eq!(
        listed["data"],
        serde_json::json!([]),
        "nothing reached OpenAI"
    );

    let mut full = start_request("meta-14");
    full.metadata = pairs(14);
    let job = server.start_job(full.clone()).await;
    assert_eq!(
        job.metadata, full.metadata,
        "the job keeps the caller's pairs"
    );
    let remote = upstream(format!("/fine_tuning/jobs/{}", job.upstream_id)).await;
    let held = remote["metadata"]
        .as_object()
        .expect("OpenAI's job has metadata");
    assert_eq!(held.len(), 16, "{held:?}");
    for (key, value) in &full.metadata {
        assert_eq!(held[key], value.as_str(), "{key}");
    }
    assert_eq!(held["finetune_request_id"], "meta-14");
    assert_eq!(held["finetune_job_id"], job.id.as_str());
    server.stop().await;
}
