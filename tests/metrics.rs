//! The metrics listener: `/metrics` counts what the server did (gRPC calls by method and
//! code, watch streams, upstream requests and retries, jobs by state, completion tokens
//! and dollars by tier), each server its own registry; `/healthz` follows the health state.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestServer;
use finetune::config::PreBound;
use finetune::config::ServeConfig;
use finetune::pb;
use finetune::pb::stream_complete_response::Item as StreamItem;
use finetune::pb::watch_job_response::Item as WatchItem;
use finetune_emulator::{Emulator, EmulatorConfig, Fault};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const SERVICE: &str = "/fileengine.finetune.v1.FineTuneService/";

type Client = pb::fine_tune_service_client::FineTuneServiceClient<tonic::transport::Channel>;
const CHAT: &str = "POST /v1/chat/completions";
const MESSAGES: &str = "POST /v1/messages";

const TIERS: &str = r#"
auto_promote = ""

[[tier]]
name = "pro"
provider = "anthropic"
model = "claude-sonnet-5-5"
inject_knowledge = true

[[tier]]
name = "mini"
provider = "openai"
model = "gpt-4o-mini"
"#;

/// An emulator whose jobs stay queued (for about a day of real time) until cancelled.
async fn emulator() -> Emulator {
    common::emulator_with(EmulatorConfig {
        time_scale: 1000.0,
        validating_secs: 0.0,
        queued_secs: 1e8,
        ..EmulatorConfig::default()
    })
    .await
}

/// Binds the metrics port before the server starts, so the test knows it.
fn metrics_listener(config: &mut ServeConfig) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    config.metrics_listener = PreBound::new(listener);
    addr
}

/// A server on `emulator` with both providers, the tiers above, a knowledge base for
/// the `pro` tier, millisecond retry backoff and a metrics port; returns it and that port.
async fn server_for(emulator: &Emulator, dir: &std::path::Path) -> (TestServer, String) {
    let tiers = dir.join("tiers.toml");
    std::fs::write(&tiers, TIERS).unwrap();
    let knowledge = dir.join("knowledge.md");
    let rules: String = (0..200)
        .map(|i| format!("Rule {i}: prefer semantic HTML and accessible contrast.\n"))
        .collect();
    std::fs::write(&knowledge, rules).unwrap();
    let base = emulator.base_url();
    let root = base.trim_end_matches("/v1").to_owned();
    let mut metrics = None;
    let server = TestServer::start_with(|c| {
        c.openai_base_url = Some(base);
        c.openai_api_key = Some("sk-test-metrics".into());
        c.anthropic_base_url = Some(root);
        c.anthropic_api_key = Some("sk-ant-test-metrics".into());
        c.tiers = Some(tiers);
        c.knowledge = vec![knowledge];
        c.poll_interval_seconds = Some(0.05);
        c.heartbeat_seconds = 0.2;
        c.upstream_retry_delay_ms = 5;
        c.upstream_retry_max_delay_ms = 20;
        metrics = Some(metrics_listener(c));
    })
    .await;
    (server, metrics.unwrap().to_string())
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// One scrape of `/metrics`.
struct Scrape(String);

impl Scrape {
    async fn of(addr: &str) -> Scrape {
        let response = http()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Scrape(response.text().await.unwrap())
    }

    /// The sample of `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (series_name, got) = match series.split_once('{') {
                    Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)),
                    None => (series, BTreeMap::new()),
                };
                (series_name == name && got == want).then(|| value.parse().unwrap())
            })
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{}", self.0))
    }

    fn calls(&self, method: &str, code: &str) -> f64 {
        let method = format!("{SERVICE}{method}");
        self.value(
            "finetune_grpc_requests_total",
            &[("method", &method), ("code", code)],
        )
        .unwrap_or(0.0)
    }

    fn tokens(&self, tier: &str, kind: &str) -> f64 {
        self.get(
            "finetune_completion_tokens_total",
            &[("tier", tier), ("kind", kind)],
        )
    }
}

/// `a="x",b="y"` (our label values hold no commas or quotes).
fn parse_labels(text: &str) -> BTreeMap<&str, &str> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (k, v.trim_matches('"'))
        })
        .collect()
}

fn ask(tier: &str, prompt: &str) -> pb::CompleteRequest {
    pb::CompleteRequest {
        tier: tier.into(),
        ..common::ask(prompt)
    }
}

async fn answer(client: &mut Client, request: pb::CompleteRequest) -> pb::Completion {
    client
        .complete(request)
        .await
        .unwrap()
        .into_inner()
        .completion
        .unwrap()
}

/// A WatchJob stream from the first event, past its snapshot: once the snapshot has
/// arrived, the server counts the stream as open.
async fn watch_from_start(
    server: &TestServer,
    job_id: &str,
) -> tonic::Streaming<pb::WatchJobResponse> {
    let mut stream = server.watch(job_id, 0).await;
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first.item, Some(WatchItem::Snapshot(_))));
    stream
}

/// Totals of a tier's answers, as the callers saw them.
#[derive(Default, Debug)]
struct Billed {
    prompt: u64,
    completion: u64,
    cached: u64,
    cost: f64,
}

impl Billed {
    /// Adds an answer, first checking it cost what data/models.toml says `model` costs.
    fn add(&mut self, c: &pb::Completion, model: &str) {
        common::prices::assert_cost(c, model, false);
        let usage = c.usage.unwrap();
        self.prompt += usage.prompt_tokens;
        self.completion += usage.completion_tokens;
        self.cached += usage.cached_tokens;
        self.cost += c.cost_usd;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_streams_upstream_requests_jobs_and_completions() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics) = server_for(&emulator, dir.path()).await;
    let mut client = server.client();
    let faults = emulator.faults();

    // gRPC calls, answered and failed.
    client.list_tiers(pb::ListTiersRequest {}).await.unwrap();
    let missing = client
        .get_job(pb::GetJobRequest {
            job_id: "job-does-not-exist".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let invalid = client
        .complete(pb::CompleteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");

    // Completions on both tiers; each provider fails once and is retried: Anthropic with
    // a 529, OpenAI with a 503 and (opening a stream) with a dropped connection.
    let mut pro = Billed::default();
    let mut mini = Billed::default();
    pro.add(
        &answer(&mut client, ask("pro", "first question")).await,
        "claude-sonnet-5-5",
    );
    faults.inject(MESSAGES, Fault::Unavailable, 1);
    pro.add(
        &answer(&mut client, ask("pro", "second question")).await,
        "claude-sonnet-5-5",
    );
    faults.inject(CHAT, Fault::Unavailable, 1);
    mini.add(
        &answer(&mut client, ask("mini", "Explain useEffect")).await,
        "gpt-4o-mini",
    );
    faults.inject(CHAT, Fault::DropConnection, 1);
    let mut stream = client
        .stream_complete(pb::StreamCompleteRequest {
            request: Some(ask("mini", "Explain useMemo")),
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(item) = stream.next().await {
        if let StreamItem::Completion(c) = item.unwrap().item.unwrap() {
            mini.add(&c, "gpt-4o-mini");
        }
    }
    let direct = pb::CompleteRequest {
        model: "gpt-4o-mini".into(),
        ..ask("", "hi")
    };
    let direct = answer(&mut client, direct).await;
    common::prices::assert_cost(&direct, "gpt-4o-mini", false);
    let direct_usage = direct.usage.unwrap();
    assert!(faults.pending().is_empty(), "every injected fault was hit");

    let s = Scrape::of(&metrics).await;
    assert_eq!(s.calls("ListTiers", "OK"), 1.0);
    assert_eq!(s.calls("GetJob", "NOT_FOUND"), 1.0);
    assert_eq!(s.calls("Complete", "INVALID_ARGUMENT"), 1.0);
    assert_eq!(s.calls("Complete", "OK"), 4.0);
    assert_eq!(s.calls("StreamComplete", "OK"), 1.0);
    assert_eq!(s.calls("GetJob", "OK"), 0.0);
    let list_tiers = format!("{SERVICE}ListTiers");
    assert_eq!(
        s.get(
            "finetune_grpc_request_duration_seconds_count",
            &[("method", &list_tiers)]
        ),
        1.0
    );

    let upstream = |provider: &str, outcome: &str| {
        s.value(
            "finetune_upstream_requests_total",
            &[("provider", provider), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(upstream("anthropic", "529"), 1.0);
    assert_eq!(upstream("anthropic", "200"), 2.0);
    assert_eq!(upstream("openai", "503"), 1.0);
    assert_eq!(upstream("openai", "transport"), 1.0);
    assert_eq!(upstream("openai", "200"), 3.0);
    let retries = |provider| s.get("finetune_upstream_retries_total", &[("provider", provider)]);
    assert_eq!(retries("anthropic"), 1.0);
    assert_eq!(retries("openai"), 2.0);

    // Tokens and dollars add up to what the callers were told, per tier.
    for (tier, billed) in [("pro", &pro), ("mini", &mini)] {
        let input =
            s.tokens(tier, "input") + s.tokens(tier, "cache_read") + s.tokens(tier, "cache_write");
        assert_eq!(input, billed.prompt as f64, "{tier}: {billed:?}");
        assert_eq!(s.tokens(tier, "output"), billed.completion as f64, "{tier}");
        assert_eq!(s.tokens(tier, "cache_read"), billed.cached as f64, "{tier}");
        let cost = s.get("finetune_completion_cost_usd_total", &[("tier", tier)]);
        assert!(billed.cost > 0.0);
        assert!(
            (cost - billed.cost).abs() < 1e-9,
            "{tier}: {cost} vs {billed:?}"
        );
    }
    assert!(
        s.tokens("pro", "cache_write") > 0.0,
        "the first answer writes the cache"
    );
    assert!(s.tokens("pro", "cache_read") > 0.0, "the second reads it");
    assert_eq!(
        s.tokens("(model)", "output"),
        direct_usage.completion_tokens as f64,
        "a request naming a model counts under one label"
    );
    assert_eq!(s.get("finetune_watch_streams_active", &[]), 0.0);
    assert_eq!(s.get("finetune_jobs", &[("state", "queued")]), 0.0);

    // A training job, watched while queued, then cancelled.
    let job = client
        .start_training(common::StartTraining::new("metrics-1").build())
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let mut watch = watch_from_start(&server, &job.id).await;
    let second_watch = watch_from_start(&server, &job.id).await;

    let s = Scrape::of(&metrics).await;
    assert_eq!(s.get("finetune_watch_streams_active", &[]), 2.0);
    let unfinished: f64 = ["creating", "validating_files", "queued"]
        .iter()
        .map(|state| s.get("finetune_jobs", &[("state", state)]))
        .sum();
    assert_eq!(unfinished, 1.0, "{}", s.0);
    assert_eq!(s.get("finetune_jobs", &[("state", "cancelled")]), 0.0);
    assert!(
        s.calls("WatchJob", "OK") == 0.0,
        "open streams are not counted yet"
    );

    // A client that goes away: its stream is no longer counted.
    drop(second_watch);
    client
        .cancel_job(pb::CancelJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap();
    while let Some(item) = watch.next().await {
        item.unwrap();
    }
    let s = Scrape::of(&metrics).await;
    assert_eq!(
        s.calls("WatchJob", "OK"),
        1.0,
        "counted when the stream ended"
    );
    assert_eq!(s.calls("StartTraining", "OK"), 1.0);
    assert_eq!(s.calls("CancelJob", "OK"), 1.0);
    assert_eq!(s.get("finetune_jobs", &[("state", "cancelled")]), 1.0);
    assert_eq!(s.get("finetune_jobs", &[("state", "queued")]), 0.0);
    // The dropped stream ends on the server when the client's reset arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = Scrape::of(&metrics).await;
        if s.get("finetune_watch_streams_active", &[]) == 0.0 {
            assert_eq!(s.calls("WatchJob", "CANCELLED"), 1.0, "{}", s.0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped watch is still counted:\n{}",
            s.0
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_counts_into_its_own_registry() {
    let mut a_metrics = None;
    let a = TestServer::start_with(|c| a_metrics = Some(metrics_listener(c))).await;
    let mut b_metrics = None;
    let b = TestServer::start_with(|c| b_metrics = Some(metrics_listener(c))).await;
    for _ in 0..3 {
        a.client()
            .list_tiers(pb::ListTiersRequest {})
            .await
            .unwrap();
    }
    b.client()
        .list_tiers(pb::ListTiersRequest {})
        .await
        .unwrap();
    let a_scrape = Scrape::of(&a_metrics.unwrap().to_string()).await;
    let b_scrape = Scrape::of(&b_metrics.unwrap().to_string()).await;
    assert_eq!(a_scrape.calls("ListTiers", "OK"), 3.0);
    assert_eq!(b_scrape.calls("ListTiers", "OK"), 1.0);
    // No provider, no job store to count: the jobs gauge stays empty.
    assert_eq!(
        a_scrape.value("finetune_jobs", &[("state", "queued")]),
        None
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_share_one_label() {
    let mut metrics = None;
    let server = TestServer::start_with(|c| metrics = Some(metrics_listener(c))).await;
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    for name in ["Nope", "AlsoNope"] {
        grpc.ready().await.unwrap();
        let path = format!("{SERVICE}{name}").parse().unwrap();
        let status = grpc
            .unary::<_, pb::ListTiersResponse, _>(
                tonic::Request::new(pb::ListTiersRequest {}),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
    }
    let s = Scrape::of(&metrics.unwrap().to_string()).await;
    assert_eq!(
        s.get(
            "finetune_grpc_requests_total",
            &[("method", "other"), ("code", "UNIMPLEMENTED")]
        ),
        2.0
    );
    assert!(!s.0.contains("Nope"), "{}", s.0);
    server.stop().await;
}

/// The server of the shutdown test, with the stop signal in the test's hands.
struct Stoppable {
    channel: tonic::transport::Channel,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), finetune_core::Error>>,
    _dir: tempfile::TempDir,
}

async fn stoppable() -> (Stoppable, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::for_data_dir(dir.path());
    let metrics = metrics_listener(&mut config).to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(finetune::server::serve(config, listener, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let server = Stoppable {
        channel,
        stop,
        task,
        _dir: dir,
    };
    (server, metrics)
}

async fn healthz(addr: &str) -> reqwest::Result<(u16, String)> {
    let response = http().get(format!("http://{addr}/healthz")).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_ok_while_serving_and_503_from_the_start_of_shutdown() {
    let (server, metrics) = stoppable().await;
    let (status, body) = healthz(&metrics).await.unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));

    let mut health = HealthClient::new(server.channel.clone());
    let mut updates = health
        .watch(HealthCheckRequest {
            service: "fileengine.finetune.v1.FineTuneService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first: HealthCheckResponse = updates.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // An upload the client keeps open holds the drain open. With room for one chunk in
    // the channel, the second send waits until the client took the first, so the call
    // is on the connection; a call answered after it on the same connection proves that
    // the server has it.
    let mut client =
        pb::fine_tune_service_client::FineTuneServiceClient::new(server.channel.clone());
    let (chunks, rx) = tokio::sync::mpsc::channel::<pb::UploadDatasetRequest>(1);
    let upload = {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .upload_dataset(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        })
    };
    for _ in 0..2 {
        chunks
            .send(pb::UploadDatasetRequest {
                header: None,
                chunk: b"{\"messages\": []}\n".to_vec(),
            })
            .await
            .unwrap();
    }
    client.list_tiers(pb::ListTiersRequest {}).await.unwrap();

    server.stop.send(()).unwrap();
    let update = updates.next().await.unwrap().unwrap();
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    let (status, body) = healthz(&metrics).await.unwrap();
    assert_eq!((status, body.trim()), (503, "not serving"));
    assert!(!server.task.is_finished(), "still draining the upload");

    drop(chunks);
    let _ = upload.await.unwrap();
    server.task.await.unwrap().unwrap();
    assert!(
        healthz(&metrics).await.is_err(),
        "the metrics port closes with the server"
    );
}

#[test]
fn the_cli_prints_the_metrics_address_and_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("FINETUNE_DATA_DIR", dir.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("FINETUNE_METRICS_ADDR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let start = lines.next().unwrap().unwrap();
    let grpc = start
        .strip_prefix("finetune: listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected start line {start:?}"))
        .to_owned();
    let announced = lines.next().unwrap().unwrap();
    let addr = announced
        .strip_prefix("finetune: metrics on http://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(addr, _)| addr.to_owned())
        .unwrap_or_else(|| panic!("unexpected line {announced:?}"));
    assert!(!addr.ends_with(":0"), "the bound port is printed: {addr}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = runtime.block_on(healthz(&addr)).unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
    let scrape = runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        Scrape::of(&addr).await
    });
    assert_eq!(
        scrape.get(
            "finetune_grpc_requests_total",
            &[("method", "/grpc.health.v1.Health/Check"), ("code", "OK")]
        ),
        1.0
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.0.wait().unwrap().success(), "a clean exit on SIGTERM");
}

/// A child process that does not outlive a failed test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
