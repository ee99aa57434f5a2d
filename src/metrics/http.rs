//! The metrics listener: plain HTTP on its own address, beside the gRPC port.
//!
//! - `GET /metrics`: every metric, in Prometheus' text exposition format;
//! - `GET /healthz`: 200 `ok` while the server is SERVING, 503 from the moment shutdown
//!   begins, through the drain. It reads the same health state as
//!   `grpc.health.v1.Health/Check`.
//!
//! The listener opens once the gRPC server is up and closes when the drain ends.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_server::Health;
use tonic_health::server::{HealthReporter, HealthService};
use tracing::{info, warn};

use crate::pb::fine_tune_service_server::SERVICE_NAME;
use crate::service::AppState;
use finetune_core::error::Error;

/// The running listener; dropping it closes the port.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    state: Arc<AppState>,
    health: HealthService,
    draining: CancellationToken,
}

/// Where the metrics listener listens: a listener bound beforehand (embedders and tests
/// that need the port first), else an address to bind; no listener when neither.
#[derive(Debug)]
pub struct Listen {
    pub pre_bound: Option<std::net::TcpListener>,
    pub addr: Option<SocketAddr>,
    /// Print the address after the start line.
    pub announce: bool,
}

/// Starts the metrics listener when `listen` asks for one. It runs until the returned
/// handle is dropped, so it keeps answering (503) through the drain.
pub async fn start(
    listen: Listen,
    state: Arc<AppState>,
    health: HealthReporter,
    draining: CancellationToken,
) -> Result<Option<MetricsServer>, Error> {
    let listener = match (listen.pre_bound, listen.addr) {
        (Some(listener), _) => {
            listener
                .set_nonblocking(true)
                .map_err(|e| Error::Io(format!("metrics listener: {e}")))?;
            TcpListener::from_std(listener)
                .map_err(|e| Error::Io(format!("metrics listener: {e}")))?
        }
        (None, Some(addr)) => TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Io(format!("cannot listen for metrics on {addr}: {e}")))?,
        (None, None) => return Ok(None),
    };
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Io(format!("metrics listener address: {e}")))?;
    let shared = Arc::new(Shared {
        state,
        health: HealthService::from_health_reporter(health),
        draining,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the metrics listener failed");
        }
    });
    if listen.announce {
        println!(
            "finetune: metrics on http://{addr}/metrics, health probe on http://{addr}/healthz"
        );
    }
    info!(%addr, "serving metrics and /healthz");
    Ok(Some(MetricsServer { addr, task }))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let state = &shared.state;
    if let Some(jobs) = &state.jobs {
        match jobs.count_by_state().await {
            Ok(counts) => state.metrics.set_jobs(&counts),
            Err(e) => warn!(error = %e, "cannot count jobs for the metrics"),
        }
    }
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        state.metrics.encode(),
    )
}

async fn healthz(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    let request = tonic::Request::new(HealthCheckRequest {
        service: SERVICE_NAME.to_owned(),
    });
    let serving = match shared.health.check(request).await {
        Ok(response) => response.into_inner().status == ServingStatus::Serving as i32,
        Err(_) => false,
    };
    if serving && !shared.draining.is_cancelled() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
    }
}
