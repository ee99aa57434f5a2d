//! Load benchmark: many WatchJob streams and concurrent completions, while a health
//! checker keeps asking `grpc.health.v1.Health/Check` and the server's memory is sampled.
//!
//! `cargo run --release --example load -- --watchers 1000 --completions 200 --seconds 30`
//!
//! The server and the emulator of OpenAI and Anthropic run in child processes of their
//! own, so the server's memory is its alone: this program starts itself again as
//! `finetune emulator` and as `finetune serve` (each child calls `finetune::cli::run`, as
//! the `finetune` binary does), the server pointed at the emulator as it would be at the
//! providers, with metrics on a port of its own. Then it
//!
//! 1. starts `--jobs` training jobs and waits until they are running (the time scale
//!    keeps them running for the whole measurement);
//! 2. opens `--watchers` WatchJob streams spread over the jobs and over `--watch-channels`
//!    connections, and waits until every stream has sent its snapshot;
//! 3. for `--seconds`, keeps `--completions` calls in flight (half Complete on tier `pro`,
//!    the emulated Claude, half StreamComplete on the emulated `gpt-4o-mini`, each worker
//!    calling again as soon as an answer ends), while a health checker on its own
//!    connection calls Check every 100 ms (1 s deadline) and the server's VmRSS is read
//!    from /proc every 500 ms (the report lists it every 5 s, to show whether it levels
//!    off: at `--watchers 10000` run `--seconds 150 --time-scale 1`, so that the jobs,
//!    and their events, go on for the whole window);
//! 4. reads the server's peak RSS (VmHWM) and `/metrics`, stops the load, and checks that
//!    the server drains and exits cleanly on SIGTERM.
//!
//! Everything shares the machine's cores: the load generator, the server and the
//! emulator. The report is a markdown table on stdout, also written to
//! `bench/out/load.md`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use finetune::pb;
use finetune::pb::fine_tune_service_client::FineTuneServiceClient;
use finetune::pb::stream_complete_response::Item as StreamItem;
use finetune::pb::watch_job_response::Item as WatchItem;
use finetune_core::domain::served::percentile;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The first argument that makes this program a `finetune` child (server or emulator).
const AS_FINETUNE: &str = "--as-finetune";
const PROMPT: &str = "Build me a landing page with a dark theme and a pricing table";

#[derive(Parser, Debug)]
#[command(
    about = "Watch streams and completions under load; health-check latency and server memory"
)]
struct Args {
    /// Concurrent WatchJob streams.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Completion calls kept in flight.
    #[arg(long, default_value_t = 200)]
    completions: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Training jobs the watchers are spread over.
    #[arg(long, default_value_t = 10)]
    jobs: usize,
    /// Connections carrying the watch streams (round robin).
    #[arg(long, default_value_t = 10)]
    watch_channels: usize,
    /// Connections carrying the completions (round robin).
    #[arg(long, default_value_t = 4)]
    completion_channels: usize,
    /// The emulator's time scale. Jobs validate and queue for 20 emulated seconds, then
    /// train the sample dataset for about 180, so at 2 they run for about 90 s.
    #[arg(long, default_value_t = 2.0)]
    time_scale: f64,
    /// Milliseconds between health checks.
    #[arg(long, default_value_t = 100)]
    health_interval_ms: u64,
    /// Where the markdown report is written.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/out/load.md"))]
    out: PathBuf,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(AS_FINETUNE) {
        let args = std::iter::once("finetune".to_owned()).chain(argv[2..].iter().cloned());
        return finetune::cli::run(<finetune::cli::Cli as Parser>::parse_from(args));
    }
    let args = Args::parse();
    if args.watchers == 0 || args.jobs == 0 || args.watch_channels == 0 {
        eprintln!("load: --watchers, --jobs and --watch-channels must be at least 1");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A `finetune` child process: the server or the emulator.
struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `finetune ARGS` and returns it with its first `lines` lines of stdout.
    fn start(args: &[&str], env: &[(&str, &str)], lines: usize) -> Result<(Proc, Vec<String>)> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(AS_FINETUNE)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let child = Proc { child };
        let mut read = BufReader::new(stdout).lines();
        let mut first = Vec::new();
        for _ in 0..lines {
            first.push(read.next().ok_or("the child exited")??);
        }
        Ok((child, first))
    }

    /// A field of /proc/<pid>/status in MiB (`VmRSS`, `VmHWM`).
    fn memory_mib(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// SIGTERM, then the exit status (within `within`).
    fn terminate(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                return Err(format!("the child did not exit within {within:?} of SIGTERM").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The emulator, then the server on it; where the server listens.
struct Processes {
    server: Proc,
    emulator: Proc,
    grpc: String,
    metrics: String,
    _data: tempfile::TempDir,
}

impl Processes {
    fn start(time_scale: f64) -> Result<Processes> {
        let scale = time_scale.to_string();
        let (emulator, lines) = Proc::start(
            &["emulator", "--addr", "127.0.0.1:0", "--time-scale", &scale],
            &[],
            1,
        )?;
        let base = lines[0]
            .strip_prefix("finetune emulator: listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("unexpected emulator line {:?}", lines[0]))?
            .to_owned();
        let root = base.trim_end_matches("/v1").to_owned();
        let data = tempfile::tempdir()?;
        let data_dir = data.path().to_str().ok_or("a non-UTF-8 temporary path")?;
        let (server, lines) = Proc::start(
            &[
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
                "--poll-interval-seconds",
                "1",
                "--data-dir",
                data_dir,
            ],
            &[
                ("OPENAI_API_KEY", "sk-load"),
                ("OPENAI_BASE_URL", &base),
                ("ANTHROPIC_API_KEY", "sk-ant-load"),
                ("ANTHROPIC_BASE_URL", &root),
            ],
            2,
        )?;
        let grpc = lines[0]
            .strip_prefix("finetune: listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("unexpected start line {:?}", lines[0]))?
            .to_owned();
        let metrics = lines[1]
            .strip_prefix("finetune: metrics on http://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| format!("unexpected metrics line {:?}", lines[1]))?
            .to_owned();
        Ok(Processes {
            server,
            emulator,
            grpc,
            metrics,
            _data: data,
        })
    }
}

async fn connect(addr: &str) -> Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

fn client(channel: &Channel) -> FineTuneServiceClient<Channel> {
    FineTuneServiceClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// What the watch streams saw.
#[derive(Default)]
struct WatchStats {
    opened: AtomicU64,
    events: AtomicU64,
    heartbeats: AtomicU64,
    /// Streams that ended (a job finished) or broke during the run.
    ended: AtomicU64,
    errors: AtomicU64,
}

/// What the completion workers saw.
#[derive(Default)]
struct CompletionStats {
    complete_ok: Vec<f64>,
    stream_ok: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
}

async fn run(args: Args) -> Result<()> {
    let mut processes = Processes::start(args.time_scale)?;
    let server_addr = processes.grpc.clone();
    let control = connect(&server_addr).await?;

    // 1. Jobs, until they run.
    let dataset = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/training-data.jsonl"
    ))?;
    let mut jobs = Vec::new();
    for i in 0..args.jobs {
        let job = client(&control)
            .start_training(pb::StartTrainingRequest {
                request_id: format!("load-{i}"),
                training: Some(pb::DatasetSource {
                    source: Some(pb::dataset_source::Source::Content(dataset.clone())),
                    file_name: "training-data.jsonl".into(),
                }),
                suffix: format!("load-{i}"),
                ..Default::default()
            })
            .await?
            .into_inner()
            .job
            .ok_or("StartTraining returned no job")?;
        jobs.push(job.id);
    }
    let waiting = Instant::now();
    for id in &jobs {
        loop {
            let job = client(&control)
                .get_job(pb::GetJobRequest { job_id: id.clone() })
                .await?
                .into_inner()
                .job
                .ok_or("GetJob returned no job")?;
            if job.state == pb::JobState::Running as i32 {
                break;
            }
            if waiting.elapsed() > Duration::from_secs(120) {
                return Err(format!("job {id} is not running after 120 s").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let rss_jobs = processes.server.memory_mib("VmRSS").unwrap_or(0.0);
    eprintln!(
        "load: {} jobs running after {:.1} s; server RSS {rss_jobs:.1} MiB",
        jobs.len(),
        waiting.elapsed().as_secs_f64()
    );

    // 2. Watchers, until each has its snapshot.
    let mut watch_channels = Vec::new();
    for _ in 0..args.watch_channels {
        watch_channels.push(connect(&server_addr).await?);
    }
    let watch_stats = Arc::new(WatchStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(args.watchers);
    let mut watchers = Vec::new();
    let opening = Instant::now();
    for i in 0..args.watchers {
        let mut c = client(&watch_channels[i % watch_channels.len()]);
        let job_id = jobs[i % jobs.len()].clone();
        let stats = watch_stats.clone();
        let stop = stop.clone();
        let opened = opened_tx.clone();
        watchers.push(tokio::spawn(async move {
            let mut after = 0;
            let mut first = true;
            while !stop.load(Ordering::Relaxed) {
                let request = pb::WatchJobRequest {
                    job_id: job_id.clone(),
                    after_sequence: after,
                };
                let mut stream = match c.watch_job(request).await {
                    Ok(s) => s.into_inner(),
                    Err(_) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                while let Some(item) = stream.next().await {
                    match item.map(|i| i.item) {
                        Ok(Some(WatchItem::Snapshot(_))) => {
                            if std::mem::take(&mut first) {
                                stats.opened.fetch_add(1, Ordering::Relaxed);
                                let _ = opened.send(()).await;
                            }
                        }
                        Ok(Some(WatchItem::Event(e))) => {
                            after = e.sequence;
                            stats.events.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Some(WatchItem::Heartbeat(_))) => {
                            stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) => {}
                        Err(_) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                if !stop.load(Ordering::Relaxed) {
                    stats.ended.fetch_add(1, Ordering::Relaxed);
                    // A finished job's stream ends for good; reopening it would only spin.
                    break;
                }
            }
        }));
    }
    drop(opened_tx);
    for _ in 0..args.watchers {
        tokio::time::timeout(Duration::from_secs(60), opened_rx.recv())
            .await
            .map_err(|_| "the watch streams did not all open within 60 s")?;
    }
    let opened_in = opening.elapsed();
    let rss_watching = processes.server.memory_mib("VmRSS").unwrap_or(0.0);
    eprintln!(
        "load: {} watch streams open after {:.2} s; server RSS {rss_watching:.1} MiB",
        args.watchers,
        opened_in.as_secs_f64()
    );

    // 3. The measured window: completions, health checks, memory samples.
    let window = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + window;

    let health_channel = connect(&server_addr).await?;
    let interval = Duration::from_millis(args.health_interval_ms);
    let health = tokio::spawn(async move {
        let mut checker = HealthClient::new(health_channel);
        let mut latencies = Vec::new();
        let mut failures = Vec::new();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while tokio::time::Instant::now() < deadline {
            tick.tick().await;
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: finetune::server::SERVICE_NAME.to_owned(),
            });
            request.set_timeout(Duration::from_secs(1));
            let sent = Instant::now();
            match checker.check(request).await {
                Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => {
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(r) => failures.push(format!("status {}", r.get_ref().status)),
                Err(e) => failures.push(format!("{:?}: {}", e.code(), e.message())),
            }
        }
        (latencies, failures)
    });

    let mut completion_channels = Vec::new();
    for _ in 0..args.completion_channels.max(1) {
        completion_channels.push(connect(&server_addr).await?);
    }
    let mut workers = Vec::new();
    for i in 0..args.completions {
        let mut c = client(&completion_channels[i % completion_channels.len()]);
        workers.push(tokio::spawn(async move {
            let mut stats = CompletionStats::default();
            let streamed = i % 2 == 1;
            while tokio::time::Instant::now() < deadline {
                let request = pb::CompleteRequest {
                    messages: vec![pb::ChatMessage {
                        role: pb::ChatRole::User as i32,
                        content: PROMPT.into(),
                    }],
                    tier: if streamed {
                        String::new()
                    } else {
                        "pro".into()
                    },
                    model: if streamed {
                        "gpt-4o-mini".into()
                    } else {
                        String::new()
                    },
                    user_id: format!("load-{i}"),
                    ..Default::default()
                };
                let sent = Instant::now();
                let outcome = if streamed {
                    stream_once(&mut c, request).await
                } else {
                    c.complete(request).await.map(|_| ())
                };
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                match outcome {
                    Ok(()) if streamed => stats.stream_ok.push(ms),
                    Ok(()) => stats.complete_ok.push(ms),
                    Err(e) => {
                        stats.errors += 1;
                        stats
                            .first_error
                            .get_or_insert_with(|| format!("{:?}: {}", e.code(), e.message()));
                    }
                }
            }
            stats
        }));
    }

    let mut rss_samples = Vec::new();
    // The first sample at or after each 5 s mark of the window, with the watch events
    // received by then (memory that grows with events grows while they do).
    let mut rss_every_5s = Vec::new();
    while Instant::now() < started + window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(rss) = processes.server.memory_mib("VmRSS") {
            let at = started.elapsed().as_secs_f64();
            rss_samples.push((at, rss));
            if at >= 5.0 * (rss_every_5s.len() + 1) as f64 {
                rss_every_5s.push((rss, watch_stats.events.load(Ordering::Relaxed)));
            }
        }
    }
    let mut completions = CompletionStats::default();
    for w in workers {
        let s = w.await?;
        completions.complete_ok.extend(s.complete_ok);
        completions.stream_ok.extend(s.stream_ok);
        completions.errors += s.errors;
        if completions.first_error.is_none() {
            completions.first_error = s.first_error;
        }
    }
    let measured = started.elapsed().as_secs_f64();
    let (mut health_ms, health_failures) = health.await?;
    let broken_in_window = watch_stats.errors.load(Ordering::Relaxed);
    let ended_in_window = watch_stats.ended.load(Ordering::Relaxed);

    // 4. Peak memory and the server's own view, while the watchers are still open.
    let rss_end = processes.server.memory_mib("VmRSS").unwrap_or(0.0);
    let hwm = processes.server.memory_mib("VmHWM").unwrap_or(0.0);
    let emulator_hwm = processes.emulator.memory_mib("VmHWM").unwrap_or(0.0);
    let scraped = scrape(&processes.metrics).await?;
    let open_streams = sample(&scraped, "finetune_watch_streams_active").unwrap_or(-1.0);
    let checks_counted = sample(
        &scraped,
        "finetune_grpc_requests_total{code=\"OK\",method=\"/grpc.health.v1.Health/Check\"}",
    )
    .unwrap_or(0.0);
    stop.store(true, Ordering::Relaxed);
    let terminated = Instant::now();
    let status = processes.server.terminate(Duration::from_secs(30))?;
    let exit = format!(
        "{} after {:.2} s",
        if status.success() {
            "exit 0".to_owned()
        } else {
            format!("{status}")
        },
        terminated.elapsed().as_secs_f64()
    );
    for w in watchers {
        let _ = w.await;
    }
    processes.emulator.terminate(Duration::from_secs(10))?;
    let ended_by_shutdown = watch_stats.errors.load(Ordering::Relaxed) - broken_in_window;

    // The report.
    health_ms.sort_by(f64::total_cmp);
    completions.complete_ok.sort_by(f64::total_cmp);
    completions.stream_ok.sort_by(f64::total_cmp);
    let first_half: f64 = rss_samples
        .iter()
        .filter(|(t, _)| *t <= measured / 2.0)
        .map(|(_, r)| *r)
        .fold(0.0, f64::max);
    let second_half: f64 = rss_samples
        .iter()
        .filter(|(t, _)| *t > measured / 2.0)
        .map(|(_, r)| *r)
        .fold(0.0, f64::max);
    let w = &watch_stats;
    let mut md = String::new();
    writeln!(
        md,
        "`cargo run --release --example load -- --watchers {} --completions {} --seconds {} --jobs {} --watch-channels {} --completion-channels {} --time-scale {}`\n",
        args.watchers,
        args.completions,
        args.seconds,
        args.jobs,
        args.watch_channels,
        args.completion_channels,
        args.time_scale
    )?;
    writeln!(md, "| measure | value |\n|---|---:|")?;
    let rows: Vec<(String, String)> = vec![
        ("measured window".into(), format!("{measured:.1} s")),
        (
            "watch streams open (client / server gauge)".into(),
            format!("{} / {open_streams}", w.opened.load(Ordering::Relaxed)),
        ),
        (
            "time to open them all".into(),
            format!("{:.2} s", opened_in.as_secs_f64()),
        ),
        (
            "watch events / heartbeats received".into(),
            format!(
                "{} / {}",
                w.events.load(Ordering::Relaxed),
                w.heartbeats.load(Ordering::Relaxed)
            ),
        ),
        (
            "watch streams that ended or broke during the window".into(),
            format!("{ended_in_window} ended, {broken_in_window} broke"),
        ),
        (
            "watch streams ended by SIGTERM (UNAVAILABLE, resumable)".into(),
            format!("{ended_by_shutdown}"),
        ),
        (
            "health checks answered SERVING (server's count)".into(),
            format!("{} ({checks_counted})", health_ms.len()),
        ),
        (
            "health checks failed".into(),
            format!("{}", health_failures.len()),
        ),
        (
            "health check p50 / p99 / max".into(),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                percentile(&health_ms, 0.50),
                percentile(&health_ms, 0.99),
                health_ms.last().copied().unwrap_or(0.0)
            ),
        ),
        (
            "completions answered (Complete + StreamComplete)".into(),
            format!(
                "{} + {} = {:.0}/s",
                completions.complete_ok.len(),
                completions.stream_ok.len(),
                (completions.complete_ok.len() + completions.stream_ok.len()) as f64 / measured
            ),
        ),
        (
            "Complete (tier pro) p50 / p99".into(),
            format!(
                "{:.1} / {:.1} ms",
                percentile(&completions.complete_ok, 0.50),
                percentile(&completions.complete_ok, 0.99)
            ),
        ),
        (
            "StreamComplete (whole stream) p50 / p99".into(),
            format!(
                "{:.1} / {:.1} ms",
                percentile(&completions.stream_ok, 0.50),
                percentile(&completions.stream_ok, 0.99)
            ),
        ),
        (
            "completion errors".into(),
            match &completions.first_error {
                Some(e) => format!("{} (first: {e})", completions.errors),
                None => "0".into(),
            },
        ),
        (
            "server RSS: jobs running / watchers open / end of window".into(),
            format!("{rss_jobs:.1} / {rss_watching:.1} / {rss_end:.1} MiB"),
        ),
        (
            "server RSS max: first half / second half of the window".into(),
            format!("{first_half:.1} / {second_half:.1} MiB"),
        ),
        ("server peak RSS (VmHWM)".into(), format!("{hwm:.1} MiB")),
        (
            "emulator peak RSS (its own process)".into(),
            format!("{emulator_hwm:.1} MiB"),
        ),
        (
            "server RSS every 5 s (MiB)".into(),
            rss_every_5s
                .iter()
                .map(|(r, _)| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "watch events received by each 5 s mark (thousands)".into(),
            rss_every_5s
                .iter()
                .map(|(_, e)| format!("{:.0}", *e as f64 / 1000.0))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("SIGTERM with the streams open".into(), exit),
    ];
    for (k, v) in rows {
        writeln!(md, "| {k} | {v} |")?;
    }
    if let Some(f) = health_failures.first() {
        writeln!(md, "\nFirst failed health check: {f}")?;
    }
    print!("{md}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &md)?;
    eprintln!("load: wrote {}", args.out.display());
    if !health_failures.is_empty() || health_ms.is_empty() {
        return Err("health checks failed under load".into());
    }
    Ok(())
}

/// Reads a streamed completion to its end; an end without the completion is an error.
async fn stream_once(
    c: &mut FineTuneServiceClient<Channel>,
    request: pb::CompleteRequest,
) -> std::result::Result<(), tonic::Status> {
    let mut stream = c
        .stream_complete(pb::StreamCompleteRequest {
            request: Some(request),
        })
        .await?
        .into_inner();
    while let Some(item) = stream.next().await {
        if let Some(StreamItem::Completion(_)) = item?.item {
            return Ok(());
        }
    }
    Err(tonic::Status::unavailable(
        "the stream ended without its completion",
    ))
}

/// GET /metrics.
async fn scrape(addr: &str) -> Result<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(format!("http://{addr}/metrics")).await?;
    if !response.status().is_success() {
        return Err(format!("/metrics answered {}", response.status()).into());
    }
    Ok(response.text().await?)
}

/// The value of the sample whose series is exactly `series` (name and labels as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
