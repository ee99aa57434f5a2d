//! Restarts in emulator mode are as uneventful as with OpenAI: the real `finetune serve
//! --emulator` binary is stopped (SIGTERM, then SIGKILL) while a job trains and again
//! after a promotion, and restarted on the same data dir each time. The job trains on and
//! succeeds, the promoted tier still answers from its `ft:` model, and `train` works again,
//! all through the `finetune` CLI. The standalone `finetune emulator --data-dir` keeps its
//! files too, and a corrupt state file stops start-up with an error naming it.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::repo_file;
use serde_json::Value;

/// Long enough for any single step of the test on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(180);

/// `finetune serve --emulator` on `data_dir` at `addr`; its log goes to `log`.
struct Server {
    child: Child,
}

impl Server {
    fn start(addr: &str, data_dir: &Path, log: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_finetune"))
            .args(["serve", "--emulator", "--emulator-time-scale", "20"])
            .args([
                "--poll-interval-seconds",
                "0.05",
                "--heartbeat-seconds",
                "0.5",
            ])
            .args(["--drain-seconds", "1", "--addr", addr])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(append(log))
            .spawn()
            .unwrap();
        common::start_line(&mut child, Some(log));
        Server { child }
    }

    /// SIGTERM, and wait for the drained exit.
    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + DEADLINE;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no drain, no last save.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn append(log: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(out: &Output, what: &str) -> Value {
    let stdout = ok(out, what);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"))
}

/// The job as `finetune jobs --json` lists it.
fn job(addr: &str, id: &str) -> Value {
    let jobs = json(&common::finetune(Some(addr), &["jobs", "--json"]), "jobs");
    jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {jobs}"))
        .clone()
}

/// Polls until `done` holds for the job, failing at the deadline or a terminal state.
fn wait_for(addr: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let j = job(addr, id);
        if done(&j) {
            return j;
        }
        assert!(
            !matches!(
                j["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ),
            "{id} ended before {what}: {j}"
        );
        assert!(Instant::now() < deadline, "{id}: never {what}: {j}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn train(addr: &str, file: &Path) -> String {
    let out = common::finetune(Some(addr), &["train", file.to_str().unwrap(), "--json"]);
    json(&out, "train")["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits for a `finetune watch` process to end: its exit code and output.
fn watch_result(mut watch: Child, out: &Path) -> (Option<i32>, String) {
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = watch.kill();
            panic!(
                "watch never ended: {}",
                std::fs::read_to_string(out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), std::fs::read_to_string(out).unwrap())
}

/// The training_file_id of a job, which the CLI does not print.
fn training_file_id(addr: &str, id: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = finetune::pb::fine_tune_service_client::FineTuneServiceClient::connect(
            format!("http://{addr}"),
        )
        .await
        .unwrap();
        client
            .get_job(finetune::pb::GetJobRequest {
                job_id: id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap()
            .training_file_id
    })
}

#[test]
fn restarts_keep_the_emulators_jobs_models_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let addr = common::free_addr();
    let sample = repo_file("examples/training-data.jsonl");

    let server = Server::start(&addr, &data, &log);
    let id = train(&addr, &sample);
    let watch_out = dir.path().join("watch.txt");
    let watch = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args(["watch", &id])
        .env("FINETUNE_ADDR", &addr)
        .stdout(append(&watch_out))
        .stderr(append(&watch_out))
        .spawn()
        .unwrap();

    // SIGTERM while the job trains.
    let running = wait_for(&addr, &id, "running", |j| j["state"] == "running");
    server.terminate();
    let server = Server::start(&addr, &data, &log);
    // It trains on after the restart (more events arrive), and then dies by SIGKILL.
    let seen = running["last_sequence"].as_u64().unwrap();
    wait_for(&addr, &id, "past the restart", |j| {
        j["last_sequence"].as_u64().unwrap() > seen + 2
    });
    server.kill();
    let server = Server::start(&addr, &data, &log);

    let (code, watched) = watch_result(watch, &watch_out);
    assert_eq!(code, Some(0), "the watch ends with success:\n{watched}");
    assert!(
        !watched.contains("no longer knows"),
        "OpenAI (the emulator) still knew the job:\n{watched}"
    );
    let done = job(&addr, &id);
    assert_eq!(done["state"], "succeeded", "{done}");
    let model = done["fine_tuned_model"].as_str().unwrap().to_owned();
    assert!(model.starts_with("ft:"), "{done}");
    let first_file = training_file_id(&addr, &id);

    let promoted = json(
        &common::finetune(Some(&addr), &["promote", "--tier", "fast", "--json"]),
        "promote",
    );
    assert_eq!(promoted["model"], model.as_str(), "{promoted}");
    server.terminate();
    let server = Server::start(&addr, &data, &log);

    let answer = json(
        &common::finetune(Some(&addr), &["test", "hello", "--tier", "fast", "--json"]),
        "test",
    );
    assert_eq!(answer["model"], model.as_str(), "{answer}");
    assert_eq!(answer["tier"], "fast", "{answer}");
    assert_eq!(answer["fallback"], false, "{answer}");

    // The same dataset again: the emulator kept its upload, so it is reused.
    let again = train(&addr, &sample);
    let watched = ok(
        &common::finetune(Some(&addr), &["watch", &again]),
        "watch the same dataset",
    );
    assert!(watched.contains("succeeded"), "{watched}");
    assert_eq!(training_file_id(&addr, &again), first_file);

    // Another dataset (one example fewer) uploads and trains.
    let other = dir.path().join("other.jsonl");
    let text = std::fs::read_to_string(&sample).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&other, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let third = train(&addr, &other);
    ok(
        &common::finetune(Some(&addr), &["watch", &third]),
        "watch another dataset",
    );
    assert_ne!(training_file_id(&addr, &third), first_file);
    server.terminate();
}

/// The URL on the standalone emulator's start line.
fn emulator_url(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned()
}

fn standalone(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args(["emulator", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn the_standalone_emulator_keeps_its_files_in_its_data_dir() {
    use finetune_core::ports::RetryPolicy;
    use finetune_providers::OpenAiConfig;
    use finetune_providers::openai::OpenAi;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("emulator");
    let client = |url: String| {
        OpenAi::new(OpenAiConfig {
            retry: RetryPolicy::none(),
            ..OpenAiConfig::new("sk-test-standalone", url)
        })
        .unwrap()
    };
    let mut first = standalone(&state);
    let api = client(emulator_url(&mut first));
    let uploaded = api
        .upload_file(&repo_file("examples/training-data.jsonl"), "data.jsonl")
        .await
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = standalone(&state);
    let api = client(emulator_url(&mut second));
    let kept = api.get_file(&uploaded.id).await.unwrap();
    assert_eq!(
        (kept.bytes, kept.created_at, kept.filename.as_str()),
        (uploaded.bytes, uploaded.created_at, "data.jsonl")
    );
    let listed = api.list_files(None, 100).await.unwrap();
    assert!(listed.data.iter().any(|f| f.id == uploaded.id));
    second.kill().unwrap();
    second.wait().unwrap();
}

fn corrupt_state(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let state = dir.join("state.json");
    std::fs::write(&state, "{\"version\": 1, \"clock\": ").unwrap();
    state
}

#[test]
fn a_corrupt_state_file_stops_start_up_with_its_name() {
    let dir = tempfile::tempdir().unwrap();

    let standalone_state = corrupt_state(&dir.path().join("alone"));
    let out = standalone(&dir.path().join("alone"))
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&standalone_state.display().to_string()) && stderr.contains("corrupt"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&standalone_state).unwrap(),
        "{\"version\": 1, \"clock\": ",
        "left as it was"
    );

    let data = dir.path().join("data");
    let served_state = corrupt_state(&data.join("emulator"));
    let out = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args(["serve", "--emulator", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&served_state.display().to_string()) && stderr.contains("corrupt"),
        "{stderr}"
    );
}
