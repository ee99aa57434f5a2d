//! Shared test harness: an in-process server on 127.0.0.1:0 with its own data directory,
//! and every helper more than one test file uses, once.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "a test helper module: each test binary uses a different part"
)]

pub mod anthropic;
pub mod grpc;
pub mod invariants;
pub mod postgres;
pub mod prices;
pub mod resume;
pub mod spec;
pub mod training;

pub use grpc::{ask, authed, reason};
pub use training::{StartTraining, events, inline, reference_dataset};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use finetune::config::ServeConfig;
use finetune::pb::fine_tune_service_client::FineTuneServiceClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub struct TestServer {
    pub addr: SocketAddr,
    pub channel: Channel,
    pub data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), finetune_core::Error>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::for_data_dir(data_dir.path());
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(finetune::server::serve(config, listener, async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        TestServer {
            addr,
            channel,
            data_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn client(&self) -> FineTuneServiceClient<Channel> {
        FineTuneServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Starts training; the call must succeed. The job it made.
    pub async fn start_job(
        &self,
        request: finetune::pb::StartTrainingRequest,
    ) -> finetune::pb::Job {
        let request_id = request.request_id.clone();
        self.client()
            .start_training(request)
            .await
            .unwrap_or_else(|s| panic!("StartTraining {request_id:?} failed: {s:?}"))
            .into_inner()
            .job
            .expect("StartTraining answers with the job")
    }

    /// Opens a WatchJob stream on `job_id` after sequence `after`; opening must succeed.
    pub async fn watch(
        &self,
        job_id: &str,
        after: u64,
    ) -> tonic::Streaming<finetune::pb::WatchJobResponse> {
        self.client()
            .watch_job(finetune::pb::WatchJobRequest {
                job_id: job_id.to_owned(),
                after_sequence: after,
            })
            .await
            .unwrap_or_else(|s| panic!("WatchJob on {job_id} failed: {s:?}"))
            .into_inner()
    }

    /// Watches `job_id` after sequence `after` until the server ends the stream: every
    /// item, in order. Panics on an error item or an empty one, or if the stream is still
    /// open `within` from now (a job that does not finish). No retry: a broken stream fails.
    pub async fn watch_to_end(
        &self,
        job_id: &str,
        after: u64,
        within: std::time::Duration,
    ) -> Vec<finetune::pb::watch_job_response::Item> {
        use tokio_stream::StreamExt;
        let mut stream = self.watch(job_id, after).await;
        let deadline = tokio::time::Instant::now() + within;
        let mut items = Vec::new();
        while let Some(item) = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!("the watch of {job_id} did not end within {within:?}: {items:#?}")
            })
        {
            let item = item
                .unwrap_or_else(|s| panic!("the watch of {job_id} broke: {s:?} after {items:#?}"));
            items.push(item.item.expect("every watch item carries an item"));
        }
        items
    }

    /// Triggers a graceful shutdown and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

pub fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn sample_dataset() -> Vec<u8> {
    std::fs::read(repo_file("examples/training-data.jsonl")).unwrap()
}

/// A valid chat dataset of about `bytes` bytes, every example distinct.
pub fn synthetic_dataset(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 4096);
    let answer =
        "```html\n<button class=\"btn\" onclick=\"save()\">Save</button>\n```\n".repeat(20);
    let mut i = 0;
    while out.len() < bytes {
        let line = serde_json::json!({
            "messages": [
                {"role": "system", "content": "You are File Engine, an expert web engineer."},
                {"role": "user", "content": format!("Build component number {i}")},
                {"role": "assistant", "content": answer},
            ],
            "metadata": {"intent": "generate_code"},
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
        i += 1;
    }
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `<repo>/tools/bin/grpcurl`, else `grpcurl` on PATH. Missing grpcurl is a failure, not a
/// skip: a runbook test that cannot run must not pass.
pub fn find_grpcurl() -> PathBuf {
    let local = repo_file("tools/bin/grpcurl");
    if local.is_file() {
        return local;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("grpcurl");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "grpcurl not found in tools/bin or on PATH: run `bash scripts/tools.sh` first \
         (it installs grpcurl into tools/bin); the runbook test cannot run without it"
    );
}

/// A local address free a moment ago, for a server that must come back on the same
/// address after a restart (its clients reconnect there).
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Every upstream job of the emulator, by its `finetune_request_id` metadata.
pub async fn upstream_jobs_by_request(
    emulator: &finetune_emulator::Emulator,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let api = finetune_providers::openai::OpenAi::new(finetune_providers::OpenAiConfig {
        retry: finetune_core::ports::RetryPolicy::none(),
        ..finetune_providers::OpenAiConfig::new("sk-test-list", emulator.base_url())
    })
    .unwrap();
    finetune_core::jobs::jobs_by_request_id(&api).await.unwrap()
}

/// An emulator of OpenAI's and Anthropic's APIs on a free port, its jobs running
/// `time_scale` times faster than real time.
pub async fn emulator(time_scale: f64) -> finetune_emulator::Emulator {
    emulator_with(finetune_emulator::EmulatorConfig {
        time_scale,
        ..finetune_emulator::EmulatorConfig::default()
    })
    .await
}

/// An emulator of OpenAI's and Anthropic's APIs on a free port, configured by `config`.
pub async fn emulator_with(
    config: finetune_emulator::EmulatorConfig,
) -> finetune_emulator::Emulator {
    // reqwest (used by tests to play a client outside the service) needs a TLS provider,
    // even for http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    finetune_emulator::Emulator::start(config, listener)
        .await
        .unwrap()
}

/// Output of a command as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `finetune` binary with `args`, a client of the server at `addr` (FINETUNE_ADDR)
/// when given.
pub fn finetune_command(addr: Option<&str>, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_finetune"));
    command.args(args);
    if let Some(addr) = addr {
        command.env("FINETUNE_ADDR", addr);
    }
    command
}

/// Runs the `finetune` binary with `args` (see [`finetune_command`]) to its exit.
pub fn finetune(addr: Option<&str>, args: &[&str]) -> std::process::Output {
    finetune_command(addr, args)
        .output()
        .expect("the binary runs")
}

/// The first line a spawned `finetune serve` printed on its piped stdout, which must be
/// its start line (`finetune: listening on ADDR ...`); on any other, panics showing the
/// server's log file `log`, if it writes one. The stdout pipe stays open.
pub fn start_line(child: &mut std::process::Child, log: Option<&Path>) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().expect("stdout piped"))
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("finetune: listening on "),
        "unexpected start line {line:?}; log:\n{}",
        log.and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    );
    line
}

/// The address on a start line (`finetune: listening on ADDR ...`).
pub fn address_on(start_line: &str) -> String {
    start_line
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in the start line {start_line:?}"))
        .to_owned()
}

/// The address a spawned `finetune serve` listens on, read from its start line.
pub fn listening_address(child: &mut std::process::Child) -> String {
    address_on(&start_line(child, None))
}

/// A lookup of environment variables that sees only `pairs`.
pub fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}
