//! Limits a caller can run into, each answered with RESOURCE_EXHAUSTED and a message that
//! names the limit and the setting that raises it:
//!
//! - calls in flight per caller (`--max-calls-per-caller`; the caller is the token's name,
//!   or the peer's IP address when authentication is off), a streamed answer counting until
//!   its stream ends;
//! - WatchJob streams open on the server (`--max-watch-streams`);
//! - the size of one request message (`--max-message-bytes`): tonic refuses it as
//!   OUT_OF_RANGE, which this layer turns into RESOURCE_EXHAUSTED with a pointer to
//!   UploadDataset. The dataset size limit (`--max-dataset-bytes`) is checked where
//!   datasets are stored.
//!
//! Health and reflection are never limited.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Caller;

/// The limits' settings and state; shared by every connection.
pub struct Limits {
    per_caller: usize,
    max_watch_streams: usize,
    max_message_bytes: usize,
    callers: Mutex<HashMap<String, Arc<Semaphore>>>,
    watch_streams: Arc<Semaphore>,
}

impl Limits {
    pub fn new(per_caller: usize, max_watch_streams: usize, max_message_bytes: usize) -> Limits {
        Limits {
            per_caller,
            max_watch_streams,
            max_message_bytes,
            callers: Mutex::new(HashMap::new()),
            watch_streams: Arc::new(Semaphore::new(max_watch_streams)),
        }
    }

    /// A permit for one call of `caller` to `path`, or the refusal.
    fn admit(
        &self,
        caller: &str,
        path: &str,
    ) -> Result<Option<OwnedSemaphorePermit>, tonic::Status> {
        if path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.") {
            return Ok(None);
        }
        if path.ends_with("/WatchJob") {
            return self
                .watch_streams
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| {
                    exhausted(
                        format!(
                            "{} watch streams are open, the server's limit (--max-watch-streams); \
                             try again later or close unused streams",
                            self.max_watch_streams
                        ),
                        "--max-watch-streams",
                    )
                });
        }
        let semaphore = self
            .callers
            .lock()
            .expect("limits lock")
            .entry(caller.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_caller)))
            .clone();
        semaphore.try_acquire_owned().map(Some).map_err(|_| {
            exhausted(
                format!(
                    "caller {caller} has {} calls in flight, the limit per caller \
                     (--max-calls-per-caller); wait for some to finish",
                    self.per_caller
                ),
                "--max-calls-per-caller",
            )
        })
    }
}

/// The tower layer applying [`Limits`]; it must run after authentication, which names the
/// caller.
#[derive(Clone)]
pub struct LimitsLayer(Arc<Limits>);

impl LimitsLayer {
    pub fn new(limits: Limits) -> LimitsLayer {
        LimitsLayer(Arc::new(limits))
    }
}

impl<S> tower_layer::Layer<S> for LimitsLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Limit<S> {
        Limit {
            inner,
            limits: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Limit<S> {
    inner: S,
    limits: Arc<Limits>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Limit<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let caller = match req.extensions().get::<Caller>() {
            Some(caller) => caller.name.clone(),
            None => req
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|info| info.remote_addr())
                .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string()),
        };
        let permit = match self.limits.admit(&caller, req.uri().path()) {
            Ok(permit) => permit,
            Err(status) => {
                tracing::info!(path = %req.uri().path(), %caller, "refused: {}", status.message());
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        let max_message_bytes = self.limits.max_message_bytes;
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            if let Some(status) = too_large(&response, max_message_bytes) {
                return Ok(status.into_http());
            }
            Ok(match permit {
                // The permit lives as long as the response body: a stream holds it to its end.
                Some(permit) => response.map(|body| {
                    tonic::body::Body::new(WithPermit {
                        body,
                        _permit: permit,
                    })
                }),
                None => response,
            })
        })
    }
}

/// tonic's refusal of an oversized request (OUT_OF_RANGE in the headers), restated.
fn too_large(
    response: &http::Response<tonic::body::Body>,
    max_message_bytes: usize,
) -> Option<tonic::Status> {
    let status = tonic::Status::from_header_map(response.headers())?;
    if status.code() != tonic::Code::OutOfRange
        || !status
            .message()
            .contains("decoded message length too large")
    {
        return None;
    }
    Some(exhausted(
        format!(
            "the request message is larger than the server's limit of {max_message_bytes} bytes \
             (--max-message-bytes); send large datasets with UploadDataset and refer to them by \
             dataset_id"
        ),
        "--max-message-bytes",
    ))
}

/// RESOURCE_EXHAUSTED with the service's ErrorInfo (reason LIMIT_EXCEEDED, as for the
/// dataset size) naming the setting.
fn exhausted(message: String, setting: &str) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    tonic::Status::with_error_details(
        tonic::Code::ResourceExhausted,
        message,
        ErrorDetails::with_error_info(
            "LIMIT_EXCEEDED",
            crate::service::status::ERROR_DOMAIN,
            [("limit".to_owned(), setting.to_owned())],
        ),
    )
}

/// A response body that holds a permit until it is dropped.
struct WithPermit {
    body: tonic::body::Body,
    _permit: OwnedSemaphorePermit,
}

impl Body for WithPermit {
    type Data = <tonic::body::Body as Body>::Data;
    type Error = <tonic::body::Body as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
