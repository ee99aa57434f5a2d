//! The server the SDK test suites (clients/python, clients/typescript, clients/go) run
//! against: the real FineTune service on the project's emulator of OpenAI and Anthropic,
//! reached through a TCP proxy that the tests can cut, so each suite can prove its client
//! resumes a dropped WatchJob stream; the emulator's fault knobs are on the control
//! endpoint, so each suite can prove its client survives an ambiguous create.
//!
//! `cargo build --example sdk_harness`, then run `target/debug/examples/sdk_harness` with
//! stdin on a pipe. It prints one JSON line on stdout:
//!
//! ```json
//! {"address":"127.0.0.1:P","direct_address":"127.0.0.1:Q","control":"http://127.0.0.1:R",
//!  "sample_dataset":"/abs/examples/training-data.jsonl"}
//! ```
//!
//! - `address`: the proxy in front of the server (plaintext gRPC); clients use this one.
//! - `direct_address`: the server itself.
//! - `POST {control}/cut`: closes every open proxied connection at once; new connections are
//!   accepted as before. Answers `{"cut": n}`. Streams on a cut connection fail as the client
//!   library reports a lost connection: UNAVAILABLE in grpcio and grpc-go, CANCELED ("http/2
//!   stream closed with error code CANCEL") in connect-node.
//! - `GET {control}/connections`: `{"open": n, "accepted": m}`.
//! - `POST {control}/faults`: injects emulator faults, one rule or `{"rules": [...]}`, each
//!   `{"route": "POST /v1/fine_tuning/jobs", "times": 1, "kind": "malformed_json"}` (the
//!   kinds and fields of `finetune_emulator::Fault`, snake_case; `route` defaults to every
//!   route, `times` to 1). Answers the rules still pending: `{"rules": [...]}`.
//!   `DELETE {control}/faults` removes them all.
//! - `GET {control}/stats`: the emulator's request counts, `{"total": n, "by_route":
//!   {"POST /v1/files": n, ...}}`, to see that a request reached OpenAI.
//! - `POST {control}/restart`, body `{"down_ms": 5000}`: restarts the server as a deploy does.
//!   The server drains and stops (open proxied connections are cut), stays down for
//!   `down_ms`, then starts again on the same address and data directory. Meanwhile the
//!   proxy accepts connections and closes them at once, as a load balancer with no healthy
//!   backend does: grpc-go and grpcio report UNAVAILABLE, connect-node a reset or CANCELED. Answers
//!   `{"stopped": true, "down_ms": n}` once the server is down; `GET {control}/up` answers
//!   `{"up": bool}`.
//! - `GET {control}/upstream_jobs`: every job the emulated OpenAI holds, by the request id
//!   in its metadata: `{"by_request": {"<request id>": ["ftjob-...", ...]}}` (jobs without
//!   one under `""`), to check that a request id made exactly one paid job.
//!
//! With `--secure`, the server requires bearer tokens and speaks TLS (a certificate for
//! `localhost` and `127.0.0.1` signed by a CA made for the run), and the line also carries
//! `"tls": true`, `"ca_file"` (the CA's PEM), `"token"` (all roles) and `"read_token"` (the
//! `read` role only). Without it, `"tls": false` and no tokens.
//!
//! It exits when stdin reaches end of file (so a test that dies never leaves it running),
//! or on SIGINT/SIGTERM. The server uses a fresh data directory, removed at exit; jobs run on
//! the emulator's clock `--time-scale` times faster than real time (default 200: a job on the
//! sample dataset ends in a few seconds), polled every 50 ms, with 1 s heartbeats; the
//! server settles reservations left creating every second, and retries upstream calls as in
//! production (2 retries) with backoff from 20 ms.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use clap::Parser;
use finetune::config::ServeConfig;
use finetune_emulator::{Emulator, EmulatorConfig, FaultRule};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "The FineTune server behind a cuttable proxy, for the SDK test suites")]
struct Args {
    /// How many times faster than real time the emulator runs jobs.
    #[arg(long, default_value_t = 200.0)]
    time_scale: f64,
    /// Require bearer tokens and serve over TLS.
    #[arg(long)]
    secure: bool,
}

/// Tokens and TLS for `--secure`: (the server's token lines, the admin token, the read
/// token, the CA file), with the certificate files written into `dir`.
fn secure(
    dir: &Path,
    config: &mut ServeConfig,
) -> Result<(String, String, std::path::PathBuf), Box<dyn std::error::Error>> {
    use finetune::auth::{Role, new_token};
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
    let (admin, admin_line) = new_token("sdk-admin", &[Role::Read, Role::Train, Role::Complete]);
    let (reader, reader_line) = new_token("sdk-reader", &[Role::Read]);
    config.auth_tokens = Some(format!("{admin_line}\n{reader_line}"));

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct subject names: with rcgen's default name on both, OpenSSL-based clients
    // (Node, grpcio) take the server certificate for a self-signed one and refuse it.
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "FineTune SDK harness CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer)?;
    let (ca_file, cert_file, key_file) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&ca_file, ca_cert.pem())?;
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    config.tls_cert = Some(cert_file);
    config.tls_key = Some(key_file);
    Ok((admin, reader, ca_file))
}

/// The proxy's connections: one cancellation token per "generation"; a cut cancels the
/// current one (closing every connection made under it) and starts the next.
#[derive(Default)]
struct Proxy {
    generation: Mutex<CancellationToken>,
    open: AtomicUsize,
    accepted: AtomicUsize,
}

impl Proxy {
    fn cut(&self) -> usize {
        let open = self.open.load(Ordering::SeqCst);
        let old = std::mem::take(&mut *self.generation.lock().expect("proxy lock"));
        old.cancel();
        open
    }
}

/// Decrements the open-connection count however the connection task ends.
struct OpenGuard(Arc<Proxy>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn run_proxy(listener: TcpListener, upstream: SocketAddr, proxy: Arc<Proxy>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let token = proxy.generation.lock().expect("proxy lock").clone();
        proxy.accepted.fetch_add(1, Ordering::SeqCst);
        proxy.open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenGuard(proxy.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                () = token.cancelled() => {}
            }
            // Dropping both sockets closes them: the client sees its connection end.
        });
    }
}

/// What the control endpoint's handlers reach: the proxy, the emulator and the server.
#[derive(Clone)]
struct Control {
    proxy: Arc<Proxy>,
    emulator: Arc<Emulator>,
    server: Arc<Server>,
}

/// The running server, so that `/restart` can stop it and start it again as a deploy does.
struct Server {
    config: ServeConfig,
    addr: SocketAddr,
    running: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), finetune_core::Error>>,
}

impl Server {
    async fn start(&self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(finetune::server::serve(
            self.config.clone(),
            listener,
            stop.clone().cancelled_owned(),
        ));
        *self.running.lock().await = Some(Running { stop, task });
    }

    /// Drains and stops the server; its listener closes with it.
    async fn stop(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(running) = self.running.lock().await.take() {
            running.stop.cancel();
            running.task.await??;
        }
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct Restart {
    down_ms: u64,
}

async fn restart(
    State(control): State<Control>,
    Json(restart): Json<Restart>,
) -> Result<Json<Value>, (axum::http::StatusCode, String)> {
    control.proxy.cut();
    control.server.stop().await.map_err(|e| {
        let status = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        (status, format!("the server did not stop cleanly: {e}"))
    })?;
    let server = control.server.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(restart.down_ms)).await;
        match TcpListener::bind(server.addr).await {
            Ok(listener) => server.start(listener).await,
            Err(e) => eprintln!("sdk_harness: cannot listen on {} again: {e}", server.addr),
        }
    });
    Ok(Json(json!({ "stopped": true, "down_ms": restart.down_ms })))
}

async fn up(State(control): State<Control>) -> Json<Value> {
    let up = control.server.running.lock().await.is_some();
    Json(json!({ "up": up }))
}

async fn cut(State(control): State<Control>) -> Json<Value> {
    Json(json!({ "cut": control.proxy.cut() }))
}

/// One fault rule, or several.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Faults {
    Many { rules: Vec<FaultRule> },
    One(FaultRule),
}

async fn add_faults(State(control): State<Control>, Json(faults): Json<Faults>) -> Json<Value> {
    let rules = match faults {
        Faults::Many { rules } => rules,
        Faults::One(rule) => vec![rule],
    };
    let knobs = control.emulator.faults();
    for rule in rules {
        knobs.add(rule);
    }
    Json(json!({ "rules": knobs.pending() }))
}

async fn stats(State(control): State<Control>) -> Json<finetune_emulator::Stats> {
    Json(control.emulator.stats())
}

async fn clear_faults(State(control): State<Control>) -> Json<Value> {
    control.emulator.faults().clear();
    Json(json!({ "rules": [] }))
}

/// Every emulated OpenAI job by the `finetune_request_id` in its metadata.
async fn upstream_jobs(
    State(control): State<Control>,
) -> Result<Json<Value>, (axum::http::StatusCode, String)> {
    use finetune_core::ports::RetryPolicy;
    use finetune_providers::{OpenAiConfig, openai::OpenAi};
    let failed = |e: &dyn std::fmt::Display| {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("listing the emulator's jobs failed: {e}"),
        )
    };
    let api = OpenAi::new(OpenAiConfig {
        retry: RetryPolicy::none(),
        ..OpenAiConfig::new("sk-harness-list", control.emulator.base_url())
    })
    .map_err(|e| failed(&e))?;
    let by_request = finetune_core::jobs::jobs_by_request_id(&api)
        .await
        .map_err(|e| failed(&e))?;
    Ok(Json(json!({ "by_request": by_request })))
}

async fn connections(State(control): State<Control>) -> Json<Value> {
    let proxy = &control.proxy;
    Json(json!({
        "open": proxy.open.load(Ordering::SeqCst),
        "accepted": proxy.accepted.load(Ordering::SeqCst),
    }))
}

/// Completes when stdin reaches end of file (the test process closed it or died).
fn stdin_closed() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    rx
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let data_dir = tempfile::tempdir()?;
    // The emulator runs here rather than inside the server (`--emulator`), so that the
    // control endpoint can reach its fault knobs; the server sees it as OpenAI and Anthropic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emulator = Arc::new(
        Emulator::start(
            EmulatorConfig {
                time_scale: args.time_scale,
                ..EmulatorConfig::default()
            },
            TcpListener::bind("127.0.0.1:0").await?,
        )
        .await?,
    );
    let mut config = ServeConfig::for_data_dir(data_dir.path());
    config.openai_base_url = Some(emulator.base_url());
    config.openai_api_key = Some("sk-harness-emulator".into());
    config.anthropic_base_url = Some(emulator.anthropic_base_url());
    config.anthropic_api_key = Some("sk-ant-harness-emulator".into());
    config.poll_interval_seconds = Some(0.05);
    config.reconcile_interval_seconds = 1.0;
    config.upstream_retry_delay_ms = 20;
    config.upstream_retry_max_delay_ms = 100;
    config.heartbeat_seconds = 1.0;
    config.drain_seconds = 1;
    let secure = if args.secure {
        Some(secure(data_dir.path(), &mut config)?)
    } else {
        None
    };

    let server_listener = TcpListener::bind("127.0.0.1:0").await?;
    let direct = server_listener.local_addr()?;
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = proxy_listener.local_addr()?;
    let control_listener = TcpListener::bind("127.0.0.1:0").await?;
    let control = control_listener.local_addr()?;

    let server = Arc::new(Server {
        config,
        addr: direct,
        running: tokio::sync::Mutex::new(None),
    });
    server.start(server_listener).await;
    wait_until_serving(direct, secure.as_ref().map(|(_, _, ca)| ca.as_path())).await?;

    let proxy = Arc::new(Proxy::default());
    tokio::spawn(run_proxy(proxy_listener, direct, proxy.clone()));
    let app = axum::Router::new()
        .route("/cut", post(cut))
        .route("/connections", get(connections))
        .route("/faults", post(add_faults).delete(clear_faults))
        .route("/upstream_jobs", get(upstream_jobs))
        .route("/stats", get(stats))
        .route("/restart", post(restart))
        .route("/up", get(up))
        .with_state(Control {
            proxy: proxy.clone(),
            emulator: emulator.clone(),
            server: server.clone(),
        });
    tokio::spawn(async move { axum::serve(control_listener, app).await });

    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/training-data.jsonl");
    let mut line = json!({
        "address": address.to_string(),
        "direct_address": direct.to_string(),
        "control": format!("http://{control}"),
        "sample_dataset": sample,
        "tls": secure.is_some(),
    });
    if let Some((token, read_token, ca_file)) = &secure {
        line["token"] = json!(token);
        line["read_token"] = json!(read_token);
        line["ca_file"] = json!(ca_file);
    }
    println!("{line}");

    let signal = finetune::server::shutdown_signal();
    tokio::select! {
        () = signal => {}
        _ = stdin_closed() => {}
    }
    proxy.cut();
    server.stop().await.map_err(|e| e.to_string())?;
    drop(data_dir);
    Ok(())
}

/// Waits until the server accepts TCP connections (its listener is bound before `serve`
/// starts, so this only covers opening the store and the emulator).
async fn wait_until_serving(
    addr: SocketAddr,
    ca_file: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = match ca_file {
        Some(ca) => tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .domain_name("localhost")
                    .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(ca)?)),
            )?,
        None => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?,
    };
    let channel = endpoint.connect().await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for _ in 0..200 {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status)
            .ok();
        if status == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Err("the server did not become SERVING within 5 s".into())
}
