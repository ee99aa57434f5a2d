//! An emulator of OpenAI's HTTP API (files, uploads, fine-tuning jobs, chat completions,
//! models) and of Anthropic's Messages API (`/v1/messages`, with prompt caching) for tests
//! and `finetune serve --emulator`. No real training happens: a job walks
//! its states on an emulated clock, its files are checked and counted by OpenAI's published
//! rules ([`training_file`], independent of the project's validator), its models are its own
//! table of OpenAI's published facts (`models.rs`), and its answers are deterministic text.
//! It depends on nothing of the product.
//!
//! Shapes follow the recorded traffic in `reference/recorded/openai-dotnet` and the
//! OpenAPI spec. Faults (rate limits, 5xx, latency, dropped connections, lost responses,
//! truncated streams, malformed JSON, outages) can be injected in process through
//! [`FaultControl`] or over HTTP at `/_emulator/faults`.

#![warn(missing_docs)]

// Modules by layer; each uses only modules of the layers above it (no import circle):
// - leaves: api (OpenAI's envelope, ids), clock, config, faults (the knobs), models, net,
//   prompt_cache, tokens, training_file;
// - state: files, jobs (and persist, which saves them), app (what every handler shares);
// - shared by the front layer and the handlers: wire, anthropic_wire;
// - handlers: file_routes, job_routes, chat, anthropic; the front layer: front;
// - this file: the router and the server.
mod anthropic;
mod anthropic_wire;
mod api;
mod app;
mod chat;
mod clock;
mod config;
mod faults;
mod file_routes;
mod files;
mod front;
mod job_routes;
mod jobs;
mod models;
mod net;
mod persist;
mod prompt_cache;
mod tokens;
pub mod training_file;
mod wire;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use app::RECORDED_PER_ROUTE;
pub use config::EmulatorConfig;
pub use faults::{Fault, FaultControl, FaultRule, Stats};

use app::App;

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
        let (app, unfinished_checks) = App::new(config)?;
        for work in unfinished_checks {
            job_routes::spawn_check(&app, work);
        }
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
        let store = self.app.lock_store();
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
        .route("/v1/files", get(file_routes::list_files))
        .route(
            "/v1/files",
            post(file_routes::create_file).layer(DefaultBodyLimit::max(FILE_BODY_LIMIT)),
        )
        .route(
            "/v1/files/{id}",
            get(file_routes::get_file).delete(file_routes::delete_file),
        )
        .route("/v1/files/{id}/content", get(file_routes::file_content))
        .route("/v1/uploads", post(file_routes::create_upload))
        .route(
            "/v1/uploads/{id}/parts",
            post(file_routes::add_part).layer(DefaultBodyLimit::max(PART_BODY_LIMIT)),
        )
        .route(
            "/v1/uploads/{id}/complete",
            post(file_routes::complete_upload),
        )
        .route("/v1/uploads/{id}/cancel", post(file_routes::cancel_upload))
        .route(
            "/v1/fine_tuning/jobs",
            post(job_routes::create_job).get(job_routes::list_jobs),
        )
        .route("/v1/fine_tuning/jobs/{id}", get(job_routes::get_job))
        .route(
            "/v1/fine_tuning/jobs/{id}/cancel",
            post(job_routes::cancel_job),
        )
        .route(
            "/v1/fine_tuning/jobs/{id}/events",
            get(job_routes::list_events),
        )
        .route(
            "/v1/fine_tuning/jobs/{id}/checkpoints",
            get(job_routes::list_checkpoints),
        )
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/models", get(chat::list_models))
        .route("/v1/models/{id}", get(chat::get_model))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            front::front,
        ))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));
    let admin = Router::new()
        .route(
            "/_emulator/faults",
            get(front::admin_get)
                .post(front::admin_post)
                .delete(front::admin_delete),
        )
        .route(
            "/_emulator/stats",
            get(front::admin_stats).delete(front::admin_reset_stats),
        );
    v1.merge(admin)
        .fallback(front::unknown_route)
        .method_not_allowed_fallback(front::unknown_route)
        .with_state(app)
}
