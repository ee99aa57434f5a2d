//! Prometheus metrics: one registry per server (owned by the app state, so in-process
//! tests running several servers never mix counts), the tower layer that counts gRPC
//! calls, and the HTTP listener that serves `/metrics` and `/healthz`.
//!
//! Every name starts with `finetune_`; README's "Metrics" section lists them.

mod grpc;
pub mod http;

use finetune_core::ports::telemetry::Telemetry;
use std::collections::HashSet;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub use grpc::{GrpcMetrics, GrpcMetricsLayer};

use finetune_core::ports::chat::ChatUsage;

/// The `method` label of a path that is not one of the server's RPCs (a bounded label
/// set: a caller cannot create series by inventing paths).
pub const OTHER_METHOD: &str = "other";

/// Buckets of the latency histograms, in seconds: sub-millisecond unary calls up to
/// five-minute streams (a WatchJob is counted when it ends).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// The server's metrics. Cheap to clone: clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// `/pkg.Service/Method` of every RPC the server offers.
    methods: HashSet<Arc<str>>,
    grpc_requests: IntCounterVec,
    grpc_duration: HistogramVec,
    watch_streams: IntGauge,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_retries: IntCounterVec,
    jobs: IntGaugeVec,
    completion_tokens: IntCounterVec,
    completion_cost: CounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Two handles are equal when they share a registry.
impl PartialEq for Metrics {
    fn eq(&self, other: &Metrics) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("finetune".to_owned()), None).expect("a valid metric prefix");
        fn register<M: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            metric: M,
        ) -> M {
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique and valid");
            metric
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            register(
                &registry,
                HistogramVec::new(opts, labels).expect("a valid histogram"),
            )
        };
        let inner = Inner {
            methods: rpc_paths(),
            grpc_requests: counter(
                "grpc_requests_total",
                "gRPC calls finished, by method (/package.Service/Method) and status code",
                &["method", "code"],
            ),
            grpc_duration: histogram(
                "grpc_request_duration_seconds",
                "Time from a gRPC call's arrival to its status (for streams: the stream's whole life)",
                &["method"],
            ),
            watch_streams: register(
                &registry,
                IntGauge::new("watch_streams_active", "WatchJob streams open now")
                    .expect("a valid gauge"),
            ),
            upstream_requests: counter(
                "upstream_requests_total",
                "HTTP requests to a provider, by outcome: the HTTP status, or \"transport\" when no response came",
                &["provider", "outcome"],
            ),
            upstream_duration: histogram(
                "upstream_request_duration_seconds",
                "Time from sending a provider request to its response headers (or failure)",
                &["provider"],
            ),
            upstream_retries: counter(
                "upstream_retries_total",
                "Upstream calls repeated after a retryable failure",
                &["provider"],
            ),
            jobs: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "jobs",
                        "Training jobs in the store, by state (read at scrape time)",
                    ),
                    &["state"],
                )
                .expect("a valid gauge"),
            ),
            completion_tokens: counter(
                "completion_tokens_total",
                "Tokens of answered completions, by tier and kind (input excludes cache_read and cache_write)",
                &["tier", "kind"],
            ),
            completion_cost: register(
                &registry,
                CounterVec::new(
                    Opts::new(
                        "completion_cost_usd_total",
                        "Cost of answered completions in US dollars, by tier",
                    ),
                    &["tier"],
                )
                .expect("a valid counter"),
            ),
            registry,
        };
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// The tower layer counting every call of the gRPC server it wraps.
    pub fn grpc_layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer::new(self.clone())
    }

    /// The `method` label of a request path.
    fn method_label(&self, path: &str) -> Arc<str> {
        match self.inner.methods.get(path) {
            Some(known) => known.clone(),
            None => Arc::from(OTHER_METHOD),
        }
    }

    fn grpc_finished(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        self.inner
            .grpc_requests
            .with_label_values(&[method, code_name(code)])
            .inc();
        self.inner
            .grpc_duration
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
    }

    /// `stream`, counted as an open WatchJob stream until it ends or is dropped (the
    /// client went away). It stops counting as it yields its end, so before the call's
    /// trailers are sent.
    pub fn watch_stream<S>(&self, mut stream: S) -> impl Stream<Item = S::Item> + Send + use<S>
    where
        S: Stream + Send + Unpin,
    {
        self.inner.watch_streams.inc();
        let mut open = Some(ActiveGuard(self.inner.watch_streams.clone()));
        futures_util::stream::poll_fn(move |cx| {
            let polled = stream.poll_next_unpin(cx);
            if let Poll::Ready(None) = polled {
                drop(open.take());
            }
            polled
        })
    }

    /// Replaces the job counts: every known state, 0 when no job is in it.
    pub fn set_jobs(&self, counts: &[(String, u64)]) {
        let jobs = &self.inner.jobs;
        jobs.reset();
        for state in finetune_core::domain::job::JobState::ALL {
            jobs.with_label_values(&[state.as_str()]).set(0);
        }
        for (state, n) in counts {
            jobs.with_label_values(&[state])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Every metric in Prometheus' text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.inner.registry.gather(), &mut out)
            .expect("encoding metrics into memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Keeps a gauge one higher while it lives.
struct ActiveGuard(IntGauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `/package.Service/Method` of every RPC the server registers: the service's own,
/// health and both reflection versions, read from their descriptor sets.
fn rpc_paths() -> HashSet<Arc<str>> {
    use prost::Message;
    let sets = [
        crate::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut paths = HashSet::new();
    for bytes in sets {
        let set = prost_types::FileDescriptorSet::decode(bytes)
            .expect("compiled-in descriptor sets decode");
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                let qualified = if package.is_empty() {
                    service.name().to_owned()
                } else {
                    format!("{package}.{}", service.name())
                };
                for method in &service.method {
                    paths.insert(Arc::from(format!("/{qualified}/{}", method.name())));
                }
            }
        }
    }
    paths
}

/// The canonical name of a gRPC status code, as the gRPC docs spell it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Telemetry for Metrics {
    /// Counts one HTTP exchange with a provider: `status` is None when no response came.
    fn upstream_request(&self, provider: &str, status: Option<u16>, elapsed: Duration) {
        let outcome = match status {
            Some(code) => code.to_string(),
            None => "transport".to_owned(),
        };
        self.inner
            .upstream_requests
            .with_label_values(&[provider, &outcome])
            .inc();
        self.inner
            .upstream_duration
            .with_label_values(&[provider])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one retry of an upstream call.
    fn upstream_retry(&self, provider: &str) {
        self.inner
            .upstream_retries
            .with_label_values(&[provider])
            .inc();
    }

    /// Adds an answered completion's tokens and cost to `tier`.
    fn completion(&self, tier: &str, usage: &ChatUsage, cost_usd: f64) {
        let plain_input = usage
            .input_tokens
            .saturating_sub(usage.cache_read_tokens + usage.cache_write_tokens);
        for (kind, tokens) in [
            ("input", plain_input),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
        ] {
            self.inner
                .completion_tokens
                .with_label_values(&[tier, kind])
                .inc_by(tokens);
        }
        if cost_usd.is_finite() && cost_usd > 0.0 {
            self.inner
                .completion_cost
                .with_label_values(&[tier])
                .inc_by(cost_usd);
        } else {
            // Make the series exist at 0 for a tier whose model has no price.
            self.inner.completion_cost.with_label_values(&[tier]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_rpcs_of_every_registered_service() {
        let m = Metrics::new();
        for path in [
            "/fileengine.finetune.v1.FineTuneService/Complete",
            "/fileengine.finetune.v1.FineTuneService/WatchJob",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(&*m.method_label(path), path);
        }
        assert_eq!(
            &*m.method_label("/fileengine.finetune.v1.FineTuneService/Nope"),
            OTHER_METHOD
        );
        assert_eq!(&*m.method_label("/x"), OTHER_METHOD);
    }

    #[test]
    fn completion_splits_input_from_cached_tokens() {
        let m = Metrics::new();
        let usage = ChatUsage {
            input_tokens: 1000,
            output_tokens: 50,
            cache_read_tokens: 600,
            cache_write_tokens: 100,
        };
        m.completion("pro", &usage, 0.25);
        m.completion("pro", &usage, 0.25);
        let text = m.encode();
        for line in [
            r#"finetune_completion_tokens_total{kind="input",tier="pro"} 600"#,
            r#"finetune_completion_tokens_total{kind="cache_read",tier="pro"} 1200"#,
            r#"finetune_completion_tokens_total{kind="cache_write",tier="pro"} 200"#,
            r#"finetune_completion_tokens_total{kind="output",tier="pro"} 100"#,
            r#"finetune_completion_cost_usd_total{tier="pro"} 0.5"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn a_watch_stream_counts_until_it_ends_or_is_dropped() {
        let a = Metrics::new();
        let b = Metrics::new();
        let active = |m: &Metrics, n: u32| {
            m.encode()
                .contains(&format!("finetune_watch_streams_active {n}\n"))
        };
        let mut ending = Box::pin(a.watch_stream(futures_util::stream::iter([1, 2])));
        let dropped = a.watch_stream(futures_util::stream::pending::<()>());
        assert!(active(&a, 2));
        assert!(active(&b, 0), "registries are separate");
        assert_eq!(ending.next().await, Some(1));
        assert_eq!(ending.next().await, Some(2));
        assert!(active(&a, 2), "not ended yet");
        assert_eq!(ending.next().await, None);
        assert!(active(&a, 1), "counted out as it ends, not when dropped");
        drop(dropped);
        assert!(active(&a, 0));
        drop(ending);
        assert!(active(&a, 0), "never counted out twice");
    }

    #[test]
    fn job_counts_replace_the_previous_ones() {
        let m = Metrics::new();
        m.set_jobs(&[("running".into(), 3), ("succeeded".into(), 2)]);
        m.set_jobs(&[("succeeded".into(), 4)]);
        let text = m.encode();
        assert!(
            text.contains("finetune_jobs{state=\"running\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("finetune_jobs{state=\"succeeded\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("finetune_jobs{state=\"queued\"} 0\n"),
            "{text}"
        );
    }
}
