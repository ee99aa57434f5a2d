//! The gRPC server: health, reflection (v1 and v1alpha), FineTuneService, and a
//! graceful shutdown with a bounded drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tracing::{info, warn};

use crate::auth::AuthLayer;
use crate::config::ServeConfig;
use crate::limits::{Limits, LimitsLayer};
use crate::metrics::Metrics;
use crate::pb;
use crate::pb::fine_tune_service_server::FineTuneServiceServer;
use crate::service::{AppState, Service};
use finetune_core::dataset::Catalog;
use finetune_core::error::Error;
use finetune_core::jobs::{JobManager, JobReader, JobsConfig};
use finetune_core::ports::RetryPolicy;
use finetune_core::ports::chat::Chat;
use finetune_core::ports::telemetry::Reporter;
use finetune_core::serving::tiers::Tiers;
use finetune_core::serving::{Knowledge, Providers, Serving};
use finetune_core::store::DatasetStore;
use finetune_core::store::Store;
#[cfg(feature = "emulator")]
use finetune_emulator::{Emulator, EmulatorConfig};
#[cfg(feature = "emulator")]
use finetune_providers::OpenAiConfig;
use finetune_providers::anthropic::Anthropic;
#[cfg(feature = "emulator")]
use finetune_providers::anthropic::AnthropicConfig;
use finetune_providers::openai::OpenAi;
use finetune_store_postgres::PgStore;
use finetune_store_sqlite::SqliteStore;

/// Why `--emulator` is refused by a build without the `emulator` cargo feature.
pub const NO_EMULATOR: &str = "this build of finetune lacks the `emulator` feature, so it has no emulator: \
     build with the default features (`cargo build`) to use --emulator or `finetune emulator`";

/// What a build without the emulator holds in its place: nothing (`--emulator` is refused
/// before one could start).
#[cfg(not(feature = "emulator"))]
enum Emulator {}

#[cfg(not(feature = "emulator"))]
impl Emulator {
    async fn shutdown(self) {
        match self {}
    }
}

/// How often watched jobs are read from a shared store, besides its notifications: the
/// longest a lost notification delays an event.
const WATCH_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the database is asked whether it answers, for readiness.
const READINESS_PROBE: std::time::Duration = std::time::Duration::from_secs(1);

/// The fully qualified name health checks use for the service.
pub use crate::pb::fine_tune_service_server::SERVICE_NAME;

/// Serves on `listener` until `shutdown` completes, then drains for at most
/// `config.drain()` before closing what is left.
///
/// Health answers NOT_SERVING until the data directory is open, SERVING while
/// running, and NOT_SERVING again from the moment shutdown begins.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let health = HealthReporter::new();
    set_health(&health, ServingStatus::NotServing).await;
    let draining = CancellationToken::new();
    let health_service = HealthServer::new(DrainingHealth {
        inner: HealthService::from_health_reporter(health.clone()),
        draining: draining.clone(),
    });

    config.check()?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Io(format!("listener address: {e}")))?;
    let tokens = config.tokens()?.map(Arc::new);
    if tokens.is_none() && !addr.ip().is_loopback() && !config.allow_unauthenticated {
        return Err(Error::Config(format!(
            "refusing to serve {addr} without authentication: anyone who reaches it could train and spend. \
             Configure tokens (--auth-tokens-file, FINETUNE_AUTH_TOKENS; `finetune token new` makes one), \
             bind a loopback address, or pass --allow-unauthenticated"
        )));
    }
    let tls = tls_config(&config)?;
    let (state, upstream, emulator) = open_state(&config, draining.clone()).await?;
    let state = Arc::new(state);
    if let Some(jobs) = &state.jobs {
        let resumed = jobs.resume().await?;
        if resumed > 0 {
            info!(resumed, "resumed polling unfinished jobs");
        }
        // Both end with the manager's shutdown token (`jobs.stop()`).
        let _reconciler = jobs.spawn_reconciler();
        let _lease_keeper = jobs.spawn_lease_keeper();
    }
    let google_rpc = pb::google_rpc_descriptor_set()
        .map_err(|e| Error::Config(format!("reflection: google.rpc descriptors: {e}")))?;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_file_descriptor_set(google_rpc.clone())
        .build_v1()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_file_descriptor_set(google_rpc)
        .build_v1alpha()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    let finetune = FineTuneServiceServer::new(Service::new(state.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    }
    let auth = tokens.is_some();
    // Metrics outermost, so refused calls (auth, limits) are counted with their codes.
    let server = builder
        .layer(state.metrics.grpc_layer())
        .trace_fn(|req| tracing::info_span!("grpc", path = %req.uri().path()))
        .layer(AuthLayer::new(tokens))
        .layer(LimitsLayer::new(Limits::new(
            config.max_calls_per_caller,
            config.max_watch_streams,
            config.max_message_bytes,
        )))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(finetune)
        .serve_with_incoming_shutdown(
            // No Nagle delay on small gRPC frames: it adds latency to every unary answer.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop_rx.await;
            },
        );
    let server = tokio::spawn(server);

    set_health(&health, ServingStatus::Serving).await;
    let _readiness = follow_database(state.store.clone(), health.clone(), draining.clone());
    if config.announce {
        announce(&config, addr, auth, &upstream);
    }
    let _metrics = crate::metrics::http::start(
        crate::metrics::http::Listen {
            pre_bound: config.metrics_listener.take(),
            addr: config.metrics_addr,
            announce: config.announce,
        },
        state.clone(),
        health.clone(),
        draining.clone(),
    )
    .await
    .inspect_err(|_| server.abort())?;
    if emulator.is_some() {
        warn!(
            "EMULATOR MODE: jobs run against an emulator of OpenAI's API; no real training happens and no model is produced"
        );
    }
    info!(%addr, data_dir = %config.data_dir.display(), "serving");

    let served = run_until_shutdown(
        &config, server, shutdown, &health, &draining, &state, stop_tx,
    )
    .await;
    if let Some(emulator) = emulator {
        emulator.shutdown().await;
    }
    served
}

/// Keeps health in step with the database until shutdown: NOT_SERVING while the store
/// does not answer (a replica that can neither read nor write jobs should get no new
/// calls; the load balancer sends them to one that can), SERVING again once it does.
fn follow_database(
    store: Arc<dyn Store>,
    health: HealthReporter,
    draining: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut serving = true;
        loop {
            tokio::select! {
                () = tokio::time::sleep(READINESS_PROBE) => {}
                () = draining.cancelled() => return,
            }
            let answer = match tokio::time::timeout(READINESS_PROBE * 2, store.ping()).await {
                Ok(answer) => answer,
                Err(_) => Err(Error::Io(format!(
                    "no answer within {:?}",
                    READINESS_PROBE * 2
                ))),
            };
            match (answer, serving) {
                (Ok(()), false) => {
                    info!("the database answers again: SERVING");
                    serving = true;
                    set_health(&health, ServingStatus::Serving).await;
                    // Shutdown may have begun meanwhile: it has the last word.
                    if draining.is_cancelled() {
                        set_health(&health, ServingStatus::NotServing).await;
                    }
                }
                (Err(e), true) => {
                    warn!(error = %e, "the database does not answer: NOT_SERVING until it does");
                    serving = false;
                    set_health(&health, ServingStatus::NotServing).await;
                }
                _ => {}
            }
        }
    })
}

/// The one line users and test harnesses read to learn where the server is.
fn announce(config: &ServeConfig, addr: SocketAddr, auth: bool, upstream: &str) {
    println!(
        "finetune: listening on {addr} (gRPC{}, reflection on, {}); data dir {}; upstream: {upstream}",
        if config.tls_cert.is_some() {
            " over TLS"
        } else {
            ""
        },
        if auth {
            "bearer tokens required"
        } else {
            "no authentication"
        },
        config.data_dir.display()
    );
}

/// Serves until `shutdown` completes (or the server fails), then drains: NOT_SERVING, the
/// watch streams and pollers stopped, and at most `config.drain()` for the calls left.
async fn run_until_shutdown(
    config: &ServeConfig,
    mut server: JoinHandle<Result<(), tonic::transport::Error>>,
    shutdown: impl Future<Output = ()>,
    health: &HealthReporter,
    draining: &CancellationToken,
    state: &AppState,
    stop_tx: tokio::sync::oneshot::Sender<()>,
) -> Result<(), Error> {
    tokio::select! {
        result = &mut server => {
            return result
                .map_err(|e| Error::Io(format!("server task failed: {e}")))?
                .map_err(|e| Error::Io(format!("server failed: {e}")));
        }
        () = shutdown => {}
    }
    info!(
        drain_seconds = config.drain_seconds,
        "shutdown requested: NOT_SERVING, draining"
    );
    set_health(health, ServingStatus::NotServing).await;
    // Ends watch streams (clients resume elsewhere) and stops pollers; jobs go on upstream.
    draining.cancel();
    if let Some(jobs) = &state.jobs {
        jobs.stop().await;
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(config.drain(), &mut server).await {
        Ok(result) => {
            result
                .map_err(|e| Error::Io(format!("server task failed: {e}")))?
                .map_err(|e| Error::Io(format!("server failed: {e}")))?;
            info!("shutdown complete");
        }
        Err(_) => {
            server.abort();
            warn!(
                drain_seconds = config.drain_seconds,
                "drain timed out: closed the remaining calls"
            );
        }
    }
    Ok(())
}

/// The TLS identity from --tls-cert and --tls-key, if given.
fn tls_config(config: &ServeConfig) -> Result<Option<ServerTlsConfig>, Error> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the TLS {what} {}: {e}",
                path.display()
            ))
        })
    };
    let identity = Identity::from_pem(read(cert, "certificate")?, read(key, "key")?);
    Ok(Some(ServerTlsConfig::new().identity(identity)))
}

/// Opens the data directory and the store, and connects the providers: the emulator
/// (for both OpenAI and Anthropic), or OpenAI / Anthropic when their keys are set, or
/// none (the RPCs that need one then say how to configure it). Returns the state, a
/// description of the upstream for the start line, and the emulator to shut down.
async fn open_state(
    config: &ServeConfig,
    draining: CancellationToken,
) -> Result<(AppState, String, Option<Emulator>), Error> {
    let catalog = Arc::new(match &config.catalog {
        Some(path) => Catalog::load(path)?,
        None => Catalog::builtin(),
    });
    let tiers = match &config.tiers {
        Some(path) => Tiers::load(path)?,
        None => Tiers::builtin(),
    };
    let knowledge = Knowledge::load(&config.knowledge)?;
    let (store, datasets) = open_stores(config).await?;
    let metrics = Metrics::new();
    // Every upstream call counts its requests and retries into this server's registry.
    let retry = RetryPolicy {
        metrics: Some(Reporter::new(metrics.clone())),
        ..config.retry_policy()
    };

    let Connected {
        openai,
        anthropic,
        emulator,
        upstream,
    } = connect_providers(config, &retry).await?;

    let jobs_config = JobsConfig {
        poll_interval: config.poll_interval(),
        heartbeat: std::time::Duration::from_secs_f64(config.heartbeat_seconds),
        retry: retry.clone(),
        reconcile_interval: std::time::Duration::from_secs_f64(config.reconcile_interval_seconds),
        lease_ttl: config.lease_ttl(),
    };
    // The job history is read from the store alone, so it is served with no provider too;
    // with one, through the manager's reader, whose watchers its writes wake.
    let jobs = openai.clone().map(|provider| {
        JobManager::new(
            store.clone(),
            provider,
            catalog.clone(),
            datasets.clone(),
            jobs_config.clone(),
            draining.clone(),
        )
    });
    let history = match &jobs {
        Some(jobs) => jobs.reader().clone(),
        None => JobReader::new(store.clone(), jobs_config.heartbeat, draining),
    };
    // With replicas on one database, their writes reach this one's watchers too.
    let _follower = history.follow_store(WATCH_CATCH_UP);
    let providers = Providers {
        openai: openai.map(|o| o as Arc<dyn Chat>),
        anthropic: anthropic.map(|a| a as Arc<dyn Chat>),
    };
    let serving = Serving::new(
        tiers,
        knowledge,
        providers,
        catalog.clone(),
        store.clone(),
        Reporter::new(metrics.clone()),
    )
    .await?;
    if let Some(jobs) = &jobs {
        auto_promote(jobs, &serving);
    }
    let state = AppState {
        catalog,
        datasets,
        max_dataset_bytes: config.max_dataset_bytes,
        history,
        jobs,
        serving,
        metrics,
        store,
    };
    Ok((state, upstream, emulator))
}

/// The job store and the datasets: PostgreSQL shared with the other replicas (dataset
/// bytes saved there too, the data directory their local cache) with `--database-url`,
/// else the SQLite file and the data directory of this one process.
async fn open_stores(config: &ServeConfig) -> Result<(Arc<dyn Store>, DatasetStore), Error> {
    let datasets = DatasetStore::open(&config.data_dir)?;
    Ok(match &config.database_url {
        Some(url) => {
            let store = Arc::new(PgStore::connect(url, config.pool_settings()).await?);
            info!(database = %crate::config::redact_url(url), "job store: PostgreSQL, shared by the replicas");
            (store.clone(), datasets.with_shared(store))
        }
        None => (
            Arc::new(SqliteStore::open(&config.database_path()).await?),
            datasets,
        ),
    })
}

/// The providers the server talks to, and the upstream's description for the start line.
struct Connected {
    openai: Option<Arc<OpenAi>>,
    anthropic: Option<Arc<Anthropic>>,
    emulator: Option<Emulator>,
    upstream: String,
}

/// Connects the providers the configuration names: the in-process emulator for both
/// (`--emulator`), else OpenAI and Anthropic where their keys are set.
async fn connect_providers(config: &ServeConfig, retry: &RetryPolicy) -> Result<Connected, Error> {
    let mut emulator = None;
    let mut openai: Option<Arc<OpenAi>> = None;
    let mut anthropic: Option<Arc<Anthropic>> = None;
    let mut upstream = Vec::new();
    if config.emulator {
        let (started, emulated_openai, emulated_anthropic, line) =
            start_emulator(config, retry).await?;
        openai = Some(emulated_openai);
        anthropic = Some(emulated_anthropic);
        upstream.push(line);
        emulator = Some(started);
    } else {
        if let Some(c) = config.openai(retry) {
            upstream.push(format!("OpenAI at {}", c.base_url));
            openai = Some(Arc::new(OpenAi::new(c)?));
        }
        if let Some(c) = config.anthropic(retry) {
            upstream.push("Anthropic".to_owned());
            anthropic = Some(Arc::new(Anthropic::new(c)?));
        }
        if upstream.is_empty() {
            upstream.push(
                "none (set OPENAI_API_KEY / ANTHROPIC_API_KEY, or use --emulator)".to_owned(),
            );
        }
    }

    Ok(Connected {
        openai,
        anthropic,
        emulator,
        upstream: upstream.join("; "),
    })
}

/// With a tier set to follow training (auto-promotion), each job that succeeds is promoted
/// to it as soon as it is recorded.
fn auto_promote(jobs: &JobManager, serving: &Arc<Serving>) {
    let Some(tier) = serving.auto_promote_tier() else {
        return;
    };
    let serving = serving.clone();
    let tier = tier.to_owned();
    jobs.set_on_success(Box::new(move |job| {
        let (serving, tier, job) = (serving.clone(), tier.clone(), job.clone());
        tokio::spawn(async move {
            if let Some(model) = &job.fine_tuned_model {
                if let Err(e) = serving.promote(&tier, model, Some(&job.id)).await {
                    warn!(job_id = %job.id, error = %e, "auto-promotion failed");
                }
            }
        });
    }));
}

/// Starts the in-process emulator (`--emulator`) and connects both providers to it.
/// Returns it, the providers, and the upstream's description for the start line.
#[cfg(feature = "emulator")]
async fn start_emulator(
    config: &ServeConfig,
    retry: &RetryPolicy,
) -> Result<(Emulator, Arc<OpenAi>, Arc<Anthropic>, String), Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Io(format!("emulator: {e}")))?;
    let emulator_config = EmulatorConfig {
        time_scale: config.emulator_time_scale,
        // Its world lives beside the job store, so a restart finds the files and
        // models the store remembers.
        data_dir: Some(config.data_dir.join("emulator")),
        ..EmulatorConfig::default()
    };
    let started = Emulator::start(emulator_config, listener)
        .await
        .map_err(|e| Error::Io(format!("emulator: {e}")))?;
    let base = started.base_url();
    let openai = Arc::new(OpenAi::new(OpenAiConfig {
        retry: retry.clone(),
        ..OpenAiConfig::new("sk-emulator", base.clone())
    })?);
    let root = base.trim_end_matches("/v1").to_owned();
    let anthropic = Arc::new(Anthropic::new(AnthropicConfig {
        retry: retry.clone(),
        ..AnthropicConfig::new("sk-ant-emulator", root)
    })?);
    let line = format!(
        "EMULATOR at {base} (x{} time; no real training or model calls happen)",
        config.emulator_time_scale
    );
    Ok((started, openai, anthropic, line))
}

#[cfg(not(feature = "emulator"))]
async fn start_emulator(
    _config: &ServeConfig,
    _retry: &RetryPolicy,
) -> Result<(Emulator, Arc<OpenAi>, Arc<Anthropic>, String), Error> {
    Err(Error::Config(NO_EMULATOR.to_owned()))
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
}

/// tonic-health's service, except that Watch streams end (after a last NOT_SERVING)
/// when shutdown begins, so a health watcher never holds up the drain.
struct DrainingHealth {
    inner: HealthService,
    draining: CancellationToken,
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send>,
    >;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let updates = self.inner.watch(request).await?.into_inner();
        let last = futures_util::stream::once(async {
            Ok(HealthCheckResponse {
                status: tonic_health::pb::health_check_response::ServingStatus::NotServing as i32,
            })
        });
        let stream = updates
            .take_until(self.draining.clone().cancelled_owned())
            .chain(last);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Completes on the first SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives right after
/// the start line is printed is not lost (it would otherwise kill the process).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let (mut interrupt, mut terminate) = match (interrupt, terminate) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot listen for SIGINT/SIGTERM; stop the server with SIGKILL");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = interrupt.recv() => info!("received SIGINT"),
            _ = terminate.recv() => info!("received SIGTERM"),
        }
    }
}
