//! Secrets and user content never reach a log, an error or a response: the real `finetune
//! serve` binary runs at trace level with JSON logs, driven through every path that handles
//! a key, a token, a dataset or a prompt (validation with bad lines, training and watching,
//! completions on both providers, refused tokens, a provider refusing the key), and
//! everything it wrote (stdout, stderr) and everything the callers received is searched for
//! the canaries.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use finetune::auth::{Role, new_token};
use finetune::pb;
use finetune::pb::fine_tune_service_client::FineTuneServiceClient;
use finetune_emulator::{Emulator, EmulatorConfig};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// The provider key the server is given (and the emulator expects).
const API_KEY: &str = "sk-proj-LEAKCANARYkey0123456789abcdefXYZ";
/// A wrong key, given to a second server: the provider's refusal echoes a masked form.
const WRONG_KEY: &str = "sk-proj-WRONGCANARYkey9876543210fedcbaQRS";
const DATASET_CANARY: &str = "DATASETCANARY-4b1d";
const PROMPT_CANARY: &str = "PROMPTCANARY-93ce";
const WRONG_TOKEN: &str = "ft_TOKENCANARY-wrong-0000";

fn dataset() -> Vec<u8> {
    // The sample with a canary in one answer, one line that is not JSON and one with a
    // wrong type, both carrying the canary too.
    let sample = String::from_utf8(common::sample_dataset()).unwrap();
    let mut lines: Vec<String> = sample.lines().map(str::to_owned).collect();
    lines[0] = lines[0].replacen("```", &format!("{DATASET_CANARY} ```"), 1);
    let mut bad = lines.clone();
    bad.push(format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{DATASET_CANARY}\""
    ));
    bad.push(format!("{{\"messages\": \"{DATASET_CANARY}\"}}"));
    let good = lines.join("\n") + "\n";
    assert!(good.contains(DATASET_CANARY));
    [good, bad.join("\n") + "\n"].concat().into_bytes()
}

fn good_dataset() -> Vec<u8> {
    let all = String::from_utf8(dataset()).unwrap();
    let n = common::sample_dataset()
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    let good: Vec<&str> = all.lines().take(n).collect();
    (good.join("\n") + "\n").into_bytes()
}

struct Server {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
}

fn spawn_server(dir: &Path, emulator: &Emulator, key: &str, tokens: &str, name: &str) -> Server {
    let out = dir.join(format!("{name}.stdout"));
    let err = dir.join(format!("{name}.stderr"));
    let child = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--poll-interval-seconds",
            "0.05",
        ])
        .arg("--data-dir")
        .arg(dir.join(name))
        .env("RUST_LOG", "trace")
        .env("FINETUNE_LOG_FORMAT", "json")
        .env("OPENAI_API_KEY", key)
        .env("OPENAI_BASE_URL", emulator.base_url())
        .env("ANTHROPIC_API_KEY", key)
        .env(
            "ANTHROPIC_BASE_URL",
            emulator.base_url().trim_end_matches("/v1"),
        )
        .env("FINETUNE_AUTH_TOKENS", tokens)
        .env("FINETUNE_UPSTREAM_RETRY_DELAY_MS", "5")
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(rest) = text.strip_prefix("finetune: listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no start line: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    Server {
        child,
        addr,
        log: dir.to_path_buf(),
    }
}

fn ask(prompt: &str, tier: &str, model: &str) -> pb::CompleteRequest {
    pb::CompleteRequest {
        tier: tier.into(),
        model: model.into(),
        ..common::ask(prompt)
    }
}

/// Everything a caller can see of a status: code, message, every detail.
fn seen(status: &tonic::Status) -> String {
    format!(
        "{:?} {} {:?}",
        status.code(),
        status.message(),
        status.get_error_details()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_token_dataset_or_prompt_reaches_a_log_an_error_or_a_response() {
    let emulator = common::emulator_with(EmulatorConfig {
        time_scale: 1000.0,
        api_key: Some(API_KEY.into()),
        ..EmulatorConfig::default()
    })
    .await;
    let (token, line) = new_token("admin", &[Role::Read, Role::Train, Role::Complete]);
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server(dir.path(), &emulator, API_KEY, &line, "good");
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FineTuneServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut received = String::new();

    // Validation of a file with the canary in good and bad lines.
    let report = client
        .validate_dataset(common::authed(
            pb::ValidateDatasetRequest {
                training: common::inline(dataset(), "training-data.jsonl"),
                model: "gpt-4o-mini-2024-07-18".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(report.report.as_ref().unwrap().error_count >= 2);
    received.push_str(&format!("{report:?}"));

    // Training refused for the bad lines, then started with the good ones, and watched.
    let refused = client
        .start_training(common::authed(
            common::StartTraining::new("secrets-bad")
                .dataset(dataset())
                .build(),
            &token,
        ))
        .await
        .unwrap_err();
    received.push_str(&seen(&refused));
    let started = client
        .start_training(common::authed(
            common::StartTraining::new("secrets-good")
                .dataset(good_dataset())
                .build(),
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    received.push_str(&format!("{started:?}"));
    let job_id = started.job.unwrap().id;
    let mut watch = client
        .watch_job(common::authed(
            pb::WatchJobRequest {
                job_id: job_id.clone(),
                after_sequence: 0,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut succeeded = false;
    while let Some(item) = watch.next().await {
        let item = item.unwrap();
        if let Some(pb::watch_job_response::Item::Event(e)) = &item.item {
            succeeded |= e
                .job
                .as_ref()
                .is_some_and(|j| j.state() == pb::JobState::Succeeded);
        }
        received.push_str(&format!("{item:?}"));
    }
    assert!(succeeded, "the job ran to success");

    // Completions on both providers, plain and streamed, with the canary in the prompt.
    let prompt = format!("Build a page that says {PROMPT_CANARY}");
    for request in [ask(&prompt, "", "gpt-4o-mini"), ask(&prompt, "pro", "")] {
        let answer = client
            .complete(common::authed(request.clone(), &token))
            .await
            .unwrap();
        received.push_str(&format!("{:?}", answer.into_inner()));
        let mut stream = client
            .stream_complete(common::authed(
                pb::StreamCompleteRequest {
                    request: Some(request),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        while let Some(item) = stream.next().await {
            received.push_str(&format!("{:?}", item.unwrap()));
        }
    }

    // A wrong token, and the CLI with the right one.
    let wrong = client
        .list_jobs(common::authed(pb::ListJobsRequest::default(), WRONG_TOKEN))
        .await
        .unwrap_err();
    received.push_str(&seen(&wrong));
    let cli = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args(["jobs", "--addr", &server.addr])
        .env("FINETUNE_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    received.push_str(&String::from_utf8_lossy(&cli.stdout));
    received.push_str(&String::from_utf8_lossy(&cli.stderr));

    // A second server whose key the provider refuses: the refusal echoes a masked key.
    let mut refused_server = spawn_server(dir.path(), &emulator, WRONG_KEY, &line, "wrong-key");
    let channel = Channel::from_shared(format!("http://{}", refused_server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = FineTuneServiceClient::new(channel)
        .complete(common::authed(ask(&prompt, "", "gpt-4o-mini"), &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    received.push_str(&seen(&status));

    for s in [&mut server, &mut refused_server] {
        s.child.kill().unwrap();
        s.child.wait().unwrap();
    }
    emulator.shutdown().await;

    let mut logged = String::new();
    for entry in std::fs::read_dir(&server.log).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            logged.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    // The logs are real and detailed: the search below can find things.
    assert!(
        logged.lines().count() > 100,
        "{} log lines",
        logged.lines().count()
    );
    assert!(
        logged.contains("training job created"),
        "info events are logged"
    );
    assert!(
        logged.contains("\"level\":\"TRACE\""),
        "trace events are logged"
    );
    assert!(received.contains(&job_id));

    let canaries = [
        ("the provider key", API_KEY),
        ("the provider key's middle", "LEAKCANARY"),
        ("the refused key", WRONG_KEY),
        ("the refused key's middle", "WRONGCANARY"),
        ("the bearer token", token.as_str()),
        ("the bearer token's tail", &token[token.len() - 16..]),
        ("a wrong token", "TOKENCANARY"),
        ("dataset content", DATASET_CANARY),
    ];
    let places = [
        ("the server logs", &logged),
        ("what callers received", &received),
    ];
    // A prompt may rightly come back in the answer (the emulator echoes it): logs only.
    let prompt = [("a prompt", PROMPT_CANARY)];
    let checks = canaries
        .iter()
        .flat_map(|c| places.iter().map(move |p| (*c, *p)))
        .chain(prompt.iter().map(|c| (*c, places[0])));
    for ((what, canary), (place, text)) in checks {
        {
            if let Some(at) = text.find(canary) {
                let start = text[..at]
                    .char_indices()
                    .rev()
                    .nth(200)
                    .map_or(0, |(i, _)| i);
                let end = (at + canary.len() + 200).min(text.len());
                panic!(
                    "{what} appears in {place}: ...{}...",
                    &text[start..text.ceil_char_boundary(end)]
                );
            }
        }
    }
}
