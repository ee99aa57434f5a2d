//! An emulator of OpenAI's HTTP API (files, uploads, fine-tuning jobs, chat completions,
//! models) and of Anthropic's Messages API (`/v1/messages`, with prompt caching) for tests
//! and `finetune serve --emulator`. No real training happens: a job walks
//! its states on an emulated clock, its files are checked and counted by OpenAI's published
//! rules ([`training_file`], independent of the project's validator), and its answers are
//! deterministic text.
//!
//! Shapes follow the recorded traffic in `reference/recorded/openai-dotnet` and the
//! OpenAPI spec. Faults (rate limits, 5xx, latency, dropped connections, lost responses,
//! truncated streams, malformed JSON, outages) can be injected in process through
//! [`FaultControl`] or over HTTP at `/_emulator/faults`.

mod anthropic;
mod api;
mod chat;
mod faults;
mod files;
mod jobs;
mod net;
mod persist;
pub mod training_file;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::dataset::Catalog;

pub use faults::{Fault, FaultControl, FaultRule, Stats};

/// How the emulator behaves. Durations are in emulated seconds; the emulated clock runs
/// `time_scale` times faster than the real one.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Emulated seconds per real second: 1.0 runs jobs in real time, 100.0 makes a
    /// 220-second job take 2.2 s. Every timestamp the API returns is on this clock.
    pub time_scale: f64,
    /// Organization name: the third segment of `ft:` model names. The `organization_id`
    /// of jobs is derived from it.
    pub org: String,
    /// When set, requests with another bearer key get OpenAI's 401 `invalid_api_key`.
    /// When unset any bearer key is accepted (a missing header is still a 401).
    pub api_key: Option<String>,
    /// Models that can be fine-tuned and chatted with, and their token encodings.
    pub catalog: Catalog,
    /// Time a job spends in `validating_files`.
    pub validating_secs: f64,
    /// Time a job spends `queued`.
    pub queued_secs: f64,
    /// Time per training step.
    pub step_secs: f64,
    /// Time between streamed chat chunks.
    pub token_secs: f64,
    /// Where the emulator keeps its files, jobs and models across restarts (see
    /// `persist.rs`); None keeps them in memory only.
    pub data_dir: Option<PathBuf>,
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            time_scale: 1.0,
            org: "finetune-emulator".to_owned(),
            api_key: None,
            catalog: Catalog::builtin(),
            validating_secs: 10.0,
            queued_secs: 10.0,
            step_secs: 2.0,
            token_secs: 0.02,
            data_dir: None,
        }
    }
}

/// A running emulator. Dropping it leaves the server running until the runtime ends;
/// call [`Emulator::shutdown`] to stop it.
pub struct Emulator {
    addr: SocketAddr,
    app: App,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Emulator {
    /// Serves the emulator on `listener` (bind `127.0.0.1:0` for tests) in a spawned task.
    pub async fn start(config: EmulatorConfig, listener: TcpListener) -> std::io::Result<Emulator> {
        let app = App::new(config)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let router = router(app.clone());
        let task = tokio::spawn(async move {
            axum::serve(
                net::KillableListener::new(listener),
                router.into_make_service_with_connect_info::<net::ConnHandle>(),
            )
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
        });
        tracing::info!(%addr, "emulator listening");
        Ok(Emulator {
            addr,
            app,
            stop: Some(stop),
            task,
        })
    }

    /// The API base URL, e.g. `http://127.0.0.1:41234/v1`.
    pub fn base_url(&self) -> String {
        base_url(self.addr)
    }

    /// The Anthropic API root (`http://127.0.0.1:41234`, no `/v1`), as the Anthropic SDKs
    /// and `ANTHROPIC_BASE_URL` take it.
    pub fn anthropic_base_url(&self) -> String {
        self.base_url().trim_end_matches("/v1").to_owned()
    }

    /// The JSON bodies of the last requests to `route` (`"POST /v1/messages"`), oldest
    /// first, at most [`RECORDED_PER_ROUTE`]; only routes whose handler records them.
    pub fn last_requests(&self, route: &str) -> Vec<serde_json::Value> {
        let store = self.app.store.lock().unwrap_or_else(|e| e.into_inner());
        store
            .recorded
            .get(route)
            .map(|bodies| bodies.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The fault knobs (shared with `/_emulator/faults`).
    pub fn faults(&self) -> FaultControl {
        self.app.faults.clone()
    }

    /// Request counts so far, by `METHOD /v1/route/{template}`.
    pub fn stats(&self) -> Stats {
        self.app.faults.stats()
    }

    /// Stops accepting connections and waits for open ones to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "emulator server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "emulator server task failed"),
        }
    }
}

/// Binds `addr`, prints one line naming the URL to stdout, and serves until Ctrl-C or
/// SIGTERM. This is `finetune emulator`.
pub async fn run_standalone(config: EmulatorConfig, addr: SocketAddr) -> std::io::Result<()> {
    use std::io::Write as _;

    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot serve on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let emulator = Emulator::start(config, listener).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "finetune emulator: listening on {} (an emulator of OpenAI's API: no real training happens)",
            base_url(local)
        )?;
        out.flush()?;
    }
    shutdown_signal().await;
    tracing::info!("emulator stopping");
    emulator.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn base_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    format!("http://{}/v1", SocketAddr::new(ip, addr.port()))
}

/// Largest body of `POST /files` (512 MB, plus room for the multipart envelope).
const FILE_BODY_LIMIT: usize = files::MAX_FILE_BYTES as usize + (1 << 20);
/// Largest body of `POST /uploads/{id}/parts` (64 MB, plus the envelope).
const PART_BODY_LIMIT: usize = files::MAX_PART_BYTES as usize + (1 << 20);
/// Largest JSON body.
const JSON_BODY_LIMIT: usize = 64 << 20;

fn router(app: App) -> Router {
    let v1 = Router::new()
        .route("/v1/files", get(files::list_files))
        .route(
            "/v1/files",
            post(files::create_file).layer(DefaultBodyLimit::max(FILE_BODY_LIMIT)),
        )
        .route(
            "/v1/files/{id}",
            get(files::get_file).delete(files::delete_file),
        )
        .route("/v1/files/{id}/content", get(files::file_content))
        .route("/v1/uploads", post(files::create_upload))
        .route(
            "/v1/uploads/{id}/parts",
            post(files::add_part).layer(DefaultBodyLimit::max(PART_BODY_LIMIT)),
        )
        .route("/v1/uploads/{id}/complete", post(files::complete_upload))
        .route("/v1/uploads/{id}/cancel", post(files::cancel_upload))
        .route(
            "/v1/fine_tuning/jobs",
            post(jobs::create_job).get(jobs::list_jobs),
        )
        .route("/v1/fine_tuning/jobs/{id}", get(jobs::get_job))
        .route("/v1/fine_tuning/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/v1/fine_tuning/jobs/{id}/events", get(jobs::list_events))
        .route(
            "/v1/fine_tuning/jobs/{id}/checkpoints",
            get(jobs::list_checkpoints),
        )
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/models", get(chat::list_models))
        .route("/v1/models/{id}", get(chat::get_model))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            faults::front,
        ))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));
    let admin = Router::new()
        .route(
            "/_emulator/faults",
            get(faults::admin_get)
                .post(faults::admin_post)
                .delete(faults::admin_delete),
        )
        .route(
            "/_emulator/stats",
            get(faults::admin_stats).delete(faults::admin_reset_stats),
        );
    v1.merge(admin)
        .fallback(faults::unknown_route)
        .method_not_allowed_fallback(faults::unknown_route)
        .with_state(app)
}

/// State shared by every handler.
#[derive(Clone)]
pub(crate) struct App(Arc<Shared>);

pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    pub(crate) org_id: String,
    pub(crate) clock: Clock,
    pub(crate) faults: FaultControl,
    store: Mutex<Store>,
    disk: Option<persist::Disk>,
}

impl std::ops::Deref for App {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl App {
    fn new(config: EmulatorConfig) -> std::io::Result<App> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        if !(config.time_scale.is_finite() && config.time_scale > 0.0) {
            return Err(invalid("emulator time_scale must be a positive number"));
        }
        for d in [
            config.validating_secs,
            config.queued_secs,
            config.step_secs,
            config.token_secs,
        ] {
            if !(d.is_finite() && d >= 0.0) {
                return Err(invalid("emulator durations must be >= 0"));
            }
        }
        if config.org.is_empty() || config.org.contains(':') {
            return Err(invalid("emulator org must be non-empty and contain no ':'"));
        }
        let org_id = format!("org-{}", api::derived_id(&config.org, 24));
        let (disk, loaded) = match &config.data_dir {
            Some(dir) => {
                let (disk, loaded) = persist::Disk::open(dir)?;
                (Some(disk), loaded)
            }
            None => (None, None),
        };
        let mut store = Store::default();
        let mut anchor = None;
        if let Some(loaded) = loaded {
            anchor = Some(loaded.anchor);
            store.files = loaded.files;
            store.jobs = loaded.jobs;
        }
        let clock = Clock::resume(config.time_scale, anchor);
        let pending = store.jobs.unfinished_checks(&store.files, clock.now());
        if let Some(disk) = &disk {
            tracing::info!(
                dir = %disk.dir().display(),
                files = store.files.stored().count(),
                jobs = store.jobs.len(),
                "emulator state loaded"
            );
        }
        let app = App(Arc::new(Shared {
            clock,
            org_id,
            faults: FaultControl::default(),
            store: Mutex::new(store),
            disk,
            config,
        }));
        for work in pending {
            jobs::spawn_check(&app, work);
        }
        Ok(app)
    }

    /// Saves the store when the emulator has a data dir. Called after each change with
    /// the lock still held, so snapshots are written in the order of the changes. A
    /// failed save is logged, not answered: the change is made, only its durability lags.
    pub(crate) fn save(&self, store: &Store) {
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.save(store, self.clock.anchor()) {
                tracing::error!(error = %e, "the emulator could not save its state");
            }
        }
    }

    /// [`App::save`], taking the lock.
    pub(crate) fn save_now(&self) {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        self.save(&store);
    }

    /// Stores a new file's bytes before it is inserted (a 500 if that fails).
    pub(crate) fn write_file(&self, id: &str, data: &[u8]) -> Result<(), api::ApiError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        disk.write_file(id, data).map_err(|e| {
            tracing::error!(error = %e, "the emulator could not store a file");
            api::ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while storing the file.",
            )
            .kind("server_error")
        })
    }

    /// Drops a deleted file's bytes.
    pub(crate) fn remove_file(&self, id: &str) {
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.remove_file(id) {
                tracing::warn!(error = %e, file_id = %id, "the emulator could not remove a deleted file's bytes");
            }
        }
    }

    /// Keeps a request body for [`Emulator::last_requests`].
    pub(crate) fn record(&self, route: &str, body: serde_json::Value) {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let bodies = store.recorded.entry(route.to_owned()).or_default();
        if bodies.len() == RECORDED_PER_ROUTE {
            bodies.pop_front();
        }
        bodies.push_back(body);
    }

    /// The store with every job brought up to the emulated time `now` (result files
    /// published, plans fixed), so reads see a consistent state.
    pub(crate) fn store_at(&self, now: f64) -> MutexGuard<'_, Store> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        store.advance(now);
        store
    }
}

/// Everything the emulator holds, in memory.
#[derive(Default)]
pub(crate) struct Store {
    pub(crate) files: files::Files,
    pub(crate) uploads: files::Uploads,
    pub(crate) jobs: jobs::Jobs,
    pub(crate) prompt_cache: anthropic::PromptCache,
    /// Request bodies by route, oldest first.
    pub(crate) recorded: BTreeMap<String, VecDeque<serde_json::Value>>,
}

/// Request bodies kept per route for [`Emulator::last_requests`].
pub const RECORDED_PER_ROUTE: usize = 16;

impl Store {
    fn advance(&mut self, now: f64) {
        let Store { files, jobs, .. } = self;
        jobs.advance(now, files);
    }
}

/// The emulated clock: real time since start, times `scale`, from the emulated time at
/// start (the real time on a first start; after a restart, where the saved anchor says
/// emulated time has got to: see `persist.rs`).
pub(crate) struct Clock {
    start: Instant,
    start_wall: f64,
    start_emulated: f64,
    scale: f64,
}

impl Clock {
    fn resume(scale: f64, anchor: Option<persist::Anchor>) -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let start_emulated = match anchor {
            None => wall,
            Some(a) => a.emulated + (wall - a.wall).max(0.0) * scale,
        };
        Clock {
            start: Instant::now(),
            start_wall: wall,
            start_emulated,
            scale,
        }
    }

    /// Emulated unix time in seconds.
    pub(crate) fn now(&self) -> f64 {
        self.start_emulated + self.start.elapsed().as_secs_f64() * self.scale
    }

    /// This moment on both clocks, for the next start to continue from.
    fn anchor(&self) -> persist::Anchor {
        let elapsed = self.start.elapsed().as_secs_f64();
        persist::Anchor {
            wall: self.start_wall + elapsed,
            emulated: self.start_emulated + elapsed * self.scale,
        }
    }

    /// Real duration of `secs` emulated seconds.
    pub(crate) fn real(&self, secs: f64) -> std::time::Duration {
        std::time::Duration::from_secs_f64((secs / self.scale).max(0.0))
    }
}

/// Unix seconds of an emulated instant, as the API reports them.
pub(crate) fn ts(t: f64) -> i64 {
    t.floor() as i64
}
