//! The latency `Complete` adds over calling the provider directly, under open-loop load.
//!
//! `cargo run --release --example serving_latency -- [--rates 100,1000] [--seconds 10]`
//!
//! One process runs the emulator (chat answers with no per-token delay), the service
//! (`finetune::server::serve`, a `bench` tier on the emulator's `gpt-4o-mini`) and the load
//! generator, all on one tokio runtime, so on a small machine they contend for the same
//! cores and the figures include that contention.
//!
//! For each target rate and each path the generator schedules request starts on a fixed
//! grid (open loop: a slow answer never delays the next start), spawns each request as a
//! task, and measures from its *scheduled* start to its answer, so queueing delay counts
//! (no coordinated omission). Paths:
//!
//! - `direct`: the project's OpenAI adapter (`Chat::complete`) straight to the emulator;
//! - `service`: a tonic client calling `Complete` (tier `bench`, same message), which runs
//!   the same adapter inside the server;
//! - `floor`: `ListTiers` through the same channels, the cost of a gRPC round trip alone.
//!
//! Then `StreamComplete` against `Chat::stream` at `--stream-rate`: time to the first delta.
//! The paths of one rate are measured in `--rounds` interleaved windows, so outside load
//! on a shared machine falls on all of them alike, after `--warmup` seconds of each at that
//! rate whose samples are dropped.
//! Percentiles are nearest-rank over every sample (sorted exactly). The report is a
//! markdown table on stdout, also written to `bench/out/serving-latency.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use finetune::config::ServeConfig;
use finetune::pb;
use finetune::pb::fine_tune_service_client::FineTuneServiceClient;
use finetune::pb::stream_complete_response::Item;
use finetune_core::domain::served::percentile;
use finetune_core::ports::chat::{Chat, ChatChunk, ChatMessage, ChatRequest, ChatRole};
use finetune_emulator::{Emulator, EmulatorConfig};
use finetune_providers::OpenAiConfig;
use finetune_providers::openai::OpenAi;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tonic::transport::Channel;

const TIERS: &str = r#"
auto_promote = ""

[[tier]]
name = "bench"
provider = "openai"
model = "gpt-4o-mini"
max_output_tokens = 4096
"#;
const TIER: &str = "bench";
const MODEL: &str = "gpt-4o-mini";
const MAX_TOKENS: u32 = 4096;
const PROMPT: &str = "Build me a landing page with a dark theme and a pricing table";
const API_KEY: &str = "sk-bench";

#[derive(Parser, Debug)]
#[command(about = "Latency Complete adds over calling the emulator directly")]
struct Args {
    /// Target request rates (requests per second), each measured in turn.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    rates: Vec<f64>,
    /// Seconds measured per (rate, path).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of unmeasured load at the same rate before each measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Windows each (rate, path) measurement is cut into, the paths taking turns.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Rate of the StreamComplete first-delta comparison (0 skips it).
    #[arg(long, default_value_t = 50.0)]
    stream_rate: f64,
    /// gRPC connections to the service, used round robin.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Where the markdown report is written.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/out/serving-latency.md"))]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `Chat::complete` on the adapter, straight to the emulator.
    Direct,
    /// `Complete` through the service.
    Service,
    /// `ListTiers` through the service: the gRPC floor.
    Floor,
    /// `Chat::stream` straight to the emulator.
    DirectStream,
    /// `StreamComplete` through the service.
    ServiceStream,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Direct => "direct `Chat::complete`",
            Path::Service => "service `Complete`",
            Path::Floor => "gRPC floor `ListTiers`",
            Path::DirectStream => "direct `Chat::stream`",
            Path::ServiceStream => "service `StreamComplete`",
        }
    }
}

/// Everything a request task needs, shared.
struct Clients {
    direct: OpenAi,
    grpc: Vec<FineTuneServiceClient<Channel>>,
    chat: ChatRequest,
    complete: pb::CompleteRequest,
}

/// One request's timeline.
struct Sample {
    scheduled: Instant,
    started: Instant,
    /// The first delta of a stream.
    first: Option<Instant>,
    done: Instant,
    error: Option<String>,
}

async fn request(clients: &Clients, path: Path, i: usize, scheduled: Instant) -> Sample {
    let started = Instant::now();
    let mut grpc = clients.grpc[i % clients.grpc.len()].clone();
    let mut first = None;
    let result: Result<(), String> = match path {
        Path::Direct => clients
            .direct
            .complete(&clients.chat)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Path::Service => grpc
            .complete(clients.complete.clone())
            .await
            .map(drop)
            .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        Path::Floor => grpc
            .list_tiers(pb::ListTiersRequest {})
            .await
            .map(drop)
            .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        Path::DirectStream => {
            async {
                let mut stream = clients
                    .direct
                    .stream(&clients.chat)
                    .await
                    .map_err(|e| e.to_string())?;
                while let Some(chunk) = stream.next().await {
                    match chunk.map_err(|e| e.to_string())? {
                        ChatChunk::Delta(_) => {
                            first.get_or_insert_with(Instant::now);
                        }
                        ChatChunk::Done(_) => return Ok(()),
                    }
                }
                Err("the stream ended without Done".to_owned())
            }
            .await
        }
        Path::ServiceStream => {
            async {
                let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
                let mut stream = grpc
                    .stream_complete(pb::StreamCompleteRequest {
                        request: Some(clients.complete.clone()),
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                while let Some(item) = stream.message().await.map_err(status)? {
                    match item.item {
                        Some(Item::Delta(_)) => {
                            first.get_or_insert_with(Instant::now);
                        }
                        Some(Item::Completion(_)) => return Ok(()),
                        None => {}
                    }
                }
                Err("the stream ended without a completion".to_owned())
            }
            .await
        }
    };
    Sample {
        scheduled,
        started,
        first,
        done: Instant::now(),
        error: result.err(),
    }
}

/// Starts `rate * seconds` requests on a fixed grid and waits for all of them.
///
/// The grid is kept by a blocking-pool thread with `std::thread::sleep` (tens of
/// microseconds of slack) rather than a tokio timer (1 ms resolution), so the schedule
/// itself does not add a millisecond of jitter at 1,000 requests/s.
async fn open_loop(clients: &Arc<Clients>, path: Path, rate: f64, seconds: f64) -> Vec<Sample> {
    let count = (rate * seconds).round().max(1.0) as usize;
    let clients = clients.clone();
    let tasks = tokio::task::spawn_blocking(move || {
        let origin = Instant::now() + Duration::from_millis(2);
        let mut tasks = Vec::with_capacity(count);
        for i in 0..count {
            let scheduled = origin + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if scheduled > now {
                std::thread::sleep(scheduled - now);
            }
            let clients = clients.clone();
            tasks.push(tokio::spawn(async move {
                request(&clients, path, i, scheduled).await
            }));
        }
        tasks
    })
    .await
    .expect("the load generator panicked");
    let mut samples = Vec::with_capacity(tasks.len());
    for task in tasks {
        samples.push(task.await.expect("a request task panicked"));
    }
    samples
}

/// User plus system CPU seconds of this process so far (Linux `/proc/self/stat`, in
/// USER_HZ = 100 ticks per second); NaN elsewhere.
fn process_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let ticks: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse().ok())
        .collect();
    match ticks[..] {
        [user, system] => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` gives them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Sorted milliseconds.
fn sorted_ms(values: impl Iterator<Item = Duration>) -> Vec<f64> {
    let mut v: Vec<f64> = values.map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// One open-loop window's samples, the seconds from its first scheduled start to its
/// last answer, and the process CPU seconds it used.
struct Window {
    samples: Vec<Sample>,
    span: f64,
    cpu: f64,
}

async fn window(clients: &Arc<Clients>, path: Path, rate: f64, seconds: f64) -> Window {
    let cpu_before = process_cpu_secs();
    let samples = open_loop(clients, path, rate, seconds).await;
    let cpu = process_cpu_secs() - cpu_before;
    let span = match (
        samples.iter().map(|s| s.scheduled).min(),
        samples.iter().map(|s| s.done).max(),
    ) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    Window { samples, span, cpu }
}

struct Summary {
    path: Path,
    rate: f64,
    requests: usize,
    errors: usize,
    first_error: Option<String>,
    /// Answers per second of the windows' spans.
    achieved: f64,
    /// Scheduled start to answer (to the last item for streams).
    latency: Vec<f64>,
    /// Scheduled start to the first delta (streams only).
    first_delta: Vec<f64>,
    /// Scheduled start to the task running: generator and scheduler lag.
    lag: Vec<f64>,
    /// CPU time of the whole process (emulator, service, generator) per request.
    cpu_us_per_request: f64,
}

impl Summary {
    fn new(path: Path, rate: f64, windows: &[Window]) -> Summary {
        let samples = || windows.iter().flat_map(|w| &w.samples);
        let ok = || samples().filter(|s| s.error.is_none());
        let requests = samples().count();
        let answered = ok().count();
        let span: f64 = windows.iter().map(|w| w.span).sum();
        let cpu: f64 = windows.iter().map(|w| w.cpu).sum();
        Summary {
            path,
            rate,
            requests,
            errors: requests - answered,
            first_error: samples().find_map(|s| s.error.clone()),
            achieved: answered as f64 / span,
            latency: sorted_ms(ok().map(|s| s.done - s.scheduled)),
            first_delta: sorted_ms(ok().filter_map(|s| Some(s.first? - s.scheduled))),
            lag: sorted_ms(samples().map(|s| s.started - s.scheduled)),
            cpu_us_per_request: cpu * 1e6 / requests as f64,
        }
    }

    fn p(&self, q: f64) -> f64 {
        percentile(&self.latency, q)
    }

    fn max(&self) -> f64 {
        self.latency.last().copied().unwrap_or(0.0)
    }
}

/// Measures `paths` at `rate` for `seconds` each, in `rounds` interleaved windows (the
/// order rotating every round) so that a burst of outside load on a shared machine
/// falls on every path alike rather than on whichever ran at that moment.
async fn measure(clients: &Arc<Clients>, paths: &[Path], rate: f64, args: &Args) -> Vec<Summary> {
    for &path in paths {
        if args.warmup > 0.0 {
            open_loop(clients, path, rate, args.warmup).await;
        }
    }
    let rounds = args.rounds.max(1);
    let mut windows: Vec<Vec<Window>> = paths.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..paths.len() {
            let i = (round + k) % paths.len();
            let w = window(clients, paths[i], rate, args.seconds / rounds as f64).await;
            windows[i].push(w);
        }
    }
    let mut summaries = Vec::new();
    for (&path, windows) in paths.iter().zip(&windows) {
        let summary = Summary::new(path, rate, windows);
        eprintln!(
            "  {:>6}/s {:<26} n={} errors={} p50={:.3} ms p99={:.3} ms max={:.3} ms lag p99={:.3} ms",
            rate,
            path.label(),
            summary.requests,
            summary.errors,
            summary.p(0.50),
            summary.p(0.99),
            summary.max(),
            percentile(&summary.lag, 0.99),
        );
        if let Some(e) = &summary.first_error {
            eprintln!("    first error: {e}");
        }
        summaries.push(summary);
    }
    summaries
}

fn row(out: &mut String, s: &Summary) {
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} |",
        s.rate,
        s.path.label(),
        s.requests,
        s.errors,
        s.achieved,
        s.p(0.50),
        s.p(0.99),
        s.max(),
        percentile(&s.lag, 0.99),
        s.cpu_us_per_request,
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if args.rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) || args.channels == 0 {
        return Err("rates must be positive numbers and --channels at least 1".into());
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let load_before = load_average();

    let emulator = Emulator::start(
        EmulatorConfig {
            time_scale: 1e6,
            token_secs: 0.0,
            ..EmulatorConfig::default()
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;

    let dir = tempfile::tempdir()?;
    let tiers = dir.path().join("tiers.toml");
    std::fs::write(&tiers, TIERS)?;
    let mut config = ServeConfig::for_data_dir(dir.path().join("data"));
    config.openai_base_url = Some(emulator.base_url());
    config.openai_api_key = Some(API_KEY.into());
    config.tiers = Some(tiers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(finetune::server::serve(config, listener, async {
        let _ = stopped.await;
    }));

    let mut grpc = Vec::with_capacity(args.channels);
    for _ in 0..args.channels {
        // Separate connections, so one HTTP/2 connection's task is not the bottleneck.
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        grpc.push(FineTuneServiceClient::new(channel));
    }
    let clients = Arc::new(Clients {
        direct: OpenAi::new(OpenAiConfig::new(API_KEY, emulator.base_url()))?,
        grpc,
        chat: ChatRequest {
            model: MODEL.into(),
            system: Vec::new(),
            messages: vec![ChatMessage {
                role: ChatRole::User,
                content: PROMPT.into(),
            }],
            temperature: None,
            max_tokens: MAX_TOKENS,
            stop: Vec::new(),
            user: None,
            deadline: None,
        },
        complete: pb::CompleteRequest {
            messages: vec![pb::ChatMessage {
                role: pb::ChatRole::User as i32,
                content: PROMPT.into(),
            }],
            tier: TIER.into(),
            ..Default::default()
        },
    });

    // Both paths must do the same upstream work: same model, same answer.
    let direct = clients.direct.complete(&clients.chat).await?;
    let via = clients.grpc[0]
        .clone()
        .complete(clients.complete.clone())
        .await?
        .into_inner()
        .completion
        .ok_or("Complete answered without a completion")?;
    if direct.text != via.text || direct.model != via.model {
        return Err(format!(
            "the paths differ: direct {:?} / {:?}, service {:?} / {:?}",
            direct.model, direct.text, via.model, via.text
        )
        .into());
    }
    eprintln!(
        "answer: {} output tokens from {} ({} chars)",
        direct.usage.output_tokens,
        direct.model,
        direct.text.len()
    );

    let mut complete = Vec::new();
    for &rate in &args.rates {
        eprintln!(
            "rate {rate}/s, {} s each after {} s warm-up",
            args.seconds, args.warmup
        );
        complete.extend(
            measure(
                &clients,
                &[Path::Direct, Path::Service, Path::Floor],
                rate,
                &args,
            )
            .await,
        );
    }
    let mut streams = Vec::new();
    if args.stream_rate > 0.0 {
        eprintln!("streams at {}/s", args.stream_rate);
        streams = measure(
            &clients,
            &[Path::DirectStream, Path::ServiceStream],
            args.stream_rate,
            &args,
        )
        .await;
    }

    let report = render(&args, &load_before, &complete, &streams);
    println!("{report}");
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &report)?;
    eprintln!("wrote {}", args.out.display());

    let _ = stop.send(());
    server.await??;
    emulator.shutdown().await;
    Ok(())
}

fn render(args: &Args, load_before: &str, complete: &[Summary], streams: &[Summary]) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        out,
        "# Serving latency\n\n{}, {cores} cores, load average {load_before} before and {} \
         after; `{}`\n",
        humantime::format_rfc3339_seconds(SystemTime::now()),
        load_average(),
        std::iter::once("cargo run --release --example serving_latency --".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let _ = writeln!(
        out,
        "Open loop, {} s measured per row in {} windows (the paths of a rate taking turns) after \
         {} s warm-up, {} gRPC connections. Latency in ms \
         from each request's scheduled start to its answer; emulator, service and load \
         generator share the cores. `lag p99`: scheduled start to the request task running; \
         `CPU µs/req`: CPU time of the whole process per request.\n",
        args.seconds,
        args.rounds.max(1),
        args.warmup,
        args.channels,
    );
    let _ = writeln!(
        out,
        "| rate/s | path | requests | errors | achieved/s | p50 | p99 | max | lag p99 | CPU µs/req |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in complete {
        row(&mut out, s);
    }

    let _ = writeln!(
        out,
        "\nAdded latency of `Complete` (service minus direct, same percentile):\n"
    );
    let _ = writeln!(
        out,
        "| rate/s | added p50 | added p99 | gRPC floor p50 | gRPC floor p99 | added under 1 ms at p50 and p99 |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---|");
    for &rate in &args.rates {
        let find = |path| complete.iter().find(|s| s.rate == rate && s.path == path);
        if let (Some(d), Some(v), Some(f)) =
            (find(Path::Direct), find(Path::Service), find(Path::Floor))
        {
            let (added50, added99) = (v.p(0.50) - d.p(0.50), v.p(0.99) - d.p(0.99));
            let _ = writeln!(
                out,
                "| {rate} | {added50:.3} | {added99:.3} | {:.3} | {:.3} | {} |",
                f.p(0.50),
                f.p(0.99),
                if added50 < 1.0 && added99 < 1.0 {
                    "yes"
                } else {
                    "no"
                },
            );
        }
    }
    let _ = writeln!(
        out,
        "\nA difference of p99s smaller than the rows' `lag p99` is within the noise of the \
         machine (outside load delaying the tasks of both paths)."
    );

    if let [direct, service] = streams {
        let _ = writeln!(
            out,
            "\nStreams at {}/s: time to first delta and to the end of the stream (ms):\n",
            direct.rate
        );
        let _ = writeln!(
            out,
            "| path | requests | errors | first delta p50 | first delta p99 | end p50 | end p99 |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for s in [direct, service] {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                s.path.label(),
                s.requests,
                s.errors,
                percentile(&s.first_delta, 0.50),
                percentile(&s.first_delta, 0.99),
                s.p(0.50),
                s.p(0.99),
            );
        }
        let _ = writeln!(
            out,
            "| **added** | | | {:.3} | {:.3} | {:.3} | {:.3} |",
            percentile(&service.first_delta, 0.50) - percentile(&direct.first_delta, 0.50),
            percentile(&service.first_delta, 0.99) - percentile(&direct.first_delta, 0.99),
            service.p(0.50) - direct.p(0.50),
            service.p(0.99) - direct.p(0.99),
        );
    }
    out
}
