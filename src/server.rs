//! The gRPC server: health, reflection (v1 and v1alpha), FineTuneService, and a
//! graceful shutdown with a bounded drain.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tracing::{info, warn};

use crate::config::ServeConfig;
use crate::error::Error;
use crate::pb;
use crate::pb::fine_tune_service_server::FineTuneServiceServer;
use crate::service::{AppState, Service};

/// The fully qualified name health checks use for the service.
pub const SERVICE_NAME: &str = "fileengine.finetune.v1.FineTuneService";

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

    let state = Arc::new(AppState::open(&config)?);
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    let finetune = FineTuneServiceServer::new(Service::new(state))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);

    let addr = listener
        .local_addr()
        .map_err(|e| Error::Io(format!("listener address: {e}")))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .trace_fn(|req| tracing::info_span!("grpc", path = %req.uri().path()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(finetune)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    let mut server = tokio::spawn(server);

    set_health(&health, ServingStatus::Serving).await;
    // The one line users and test harnesses read to learn where the server is.
    println!(
        "finetune: listening on {addr} (gRPC, reflection on); data dir {}; upstream: none (training and serving arrive in a later release)",
        config.data_dir.display()
    );
    info!(%addr, data_dir = %config.data_dir.display(), "serving");

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
    set_health(&health, ServingStatus::NotServing).await;
    draining.cancel();
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
