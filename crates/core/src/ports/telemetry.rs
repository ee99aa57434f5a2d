//! What the core and the provider adapters report for the metrics, without knowing how
//! they are kept: the server's Prometheus registry (`metrics::Metrics` in the root package) is one
//! implementation. Arrows run from the metrics to this port, never from the core to them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::ports::chat::ChatUsage;

/// The events the metrics count.
pub trait Telemetry: Send + Sync + 'static {
    /// One HTTP exchange with a provider: `status` is None when no response came.
    fn upstream_request(&self, provider: &str, status: Option<u16>, elapsed: Duration);
    /// One retry of an upstream call.
    fn upstream_retry(&self, provider: &str);
    /// An answered completion's tokens and cost, for `tier`.
    fn completion(&self, tier: &str, usage: &ChatUsage, cost_usd: f64);
}

/// A shared [`Telemetry`]; two are equal when they are the same one.
#[derive(Clone)]
pub struct Reporter(Arc<dyn Telemetry>);

impl Reporter {
    /// Shares `telemetry` with every holder of a clone.
    pub fn new(telemetry: impl Telemetry) -> Reporter {
        Reporter(Arc::new(telemetry))
    }
}

impl std::ops::Deref for Reporter {
    type Target = dyn Telemetry;

    fn deref(&self) -> &(dyn Telemetry + 'static) {
        &*self.0
    }
}

impl PartialEq for Reporter {
    fn eq(&self, other: &Reporter) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reporter")
    }
}
