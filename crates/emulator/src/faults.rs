//! The fault knobs and request counts: what to inject, and what was asked. Plain state,
//! shared by the front layer that applies it ([`crate::front`]) and the handlers that
//! count abandoned streams.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One kind of failure to inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 429 `rate_limit_exceeded` with `Retry-After` (whole seconds, at least 1) and
    /// `retry-after-ms`; on `/v1/messages`, Anthropic's `rate_limit_error` with
    /// `retry-after` and `x-should-retry: true`.
    RateLimit {
        /// How long the client is told to wait, in milliseconds (default 1000).
        #[serde(default = "default_retry_after_ms")]
        retry_after_ms: u64,
    },
    /// HTTP 500 `server_error` (Anthropic: `api_error`).
    ServerError,
    /// HTTP 503 (the engine is overloaded); on `/v1/messages`, 529 `overloaded_error`.
    Unavailable,
    /// Waits `ms` real milliseconds, then answers normally.
    Latency {
        /// How long to wait before answering, in real milliseconds.
        ms: u64,
    },
    /// Closes the connection without a response and without doing the work.
    DropConnection,
    /// Does the work (e.g. creates the job), then closes the connection without the response.
    LostResponse,
    /// A streamed chat completion stops after `after_chunks` chunks with no `[DONE]`:
    /// cleanly, or with `abort` by breaking the chunked body.
    TruncateStream {
        /// Chunks sent before the stream stops.
        after_chunks: u32,
        /// Break the chunked body instead of ending it cleanly.
        #[serde(default)]
        abort: bool,
    },
    /// Answers 200 with a JSON body cut in half.
    MalformedJson,
    /// A streamed `/v1/messages` answer sends `after_chunks` events (never `message_stop`),
    /// then `event: error` with `overloaded_error` after the 200; a plain one gets the
    /// comparable 529. Other routes answer normally.
    ErrorEvent {
        /// Stream events sent before the `error` event.
        #[serde(default)]
        after_chunks: u32,
    },
}

fn default_retry_after_ms() -> u64 {
    1000
}

/// A fault for the next `times` requests that match `route`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// `METHOD /v1/path/{template}` as in [`Stats`] (e.g. `POST /v1/fine_tuning/jobs`,
    /// `GET /v1/fine_tuning/jobs/{id}`), or `*` for every route.
    #[serde(default = "any_route")]
    pub route: String,
    /// Matching requests still to fail.
    #[serde(default = "one")]
    pub times: u32,
    /// The failure injected into each matching request.
    #[serde(flatten)]
    pub fault: Fault,
}

fn any_route() -> String {
    "*".to_owned()
}

fn one() -> u32 {
    1
}

/// Request counts by route, `METHOD /v1/path/{template}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests served since start (or the last reset), all routes together.
    pub total: u64,
    /// Requests per route template, e.g. `POST /v1/fine_tuning/jobs`.
    pub by_route: BTreeMap<String, u64>,
    /// Streamed responses whose client went away before the end (a cancelled upstream
    /// request, as the provider would see it).
    #[serde(default)]
    pub abandoned_streams: u64,
    /// When each job was read (`GET /v1/fine_tuning/jobs/{id}`, what a poll starts with),
    /// in unix milliseconds, the last [`JOB_READS_KEPT`] per job: how often, and how many
    /// pollers at once, a job is polled.
    #[serde(default)]
    pub job_reads: BTreeMap<String, VecDeque<i64>>,
}

/// Reads kept per job in [`Stats::job_reads`].
pub(crate) const JOB_READS_KEPT: usize = 4096;

impl Stats {
    /// Requests counted for `route` (e.g. `"POST /v1/fine_tuning/jobs"`).
    pub fn count(&self, route: &str) -> u64 {
        self.by_route.get(route).copied().unwrap_or(0)
    }
}

/// The emulator's fault knobs; clones share state.
#[derive(Clone, Default)]
pub struct FaultControl(Arc<Mutex<Knobs>>);

#[derive(Default)]
struct Knobs {
    rules: Vec<FaultRule>,
    down_until: Option<Instant>,
    stats: Stats,
}

impl FaultControl {
    /// Fails the next `times` requests to `route` (`"*"` for any) with `fault`.
    pub fn inject(&self, route: &str, fault: Fault, times: u32) {
        self.add(FaultRule {
            route: route.to_owned(),
            times,
            fault,
        });
    }

    /// Adds a rule after the existing ones; the first matching rule wins.
    pub fn add(&self, rule: FaultRule) {
        if rule.times > 0 {
            self.lock().rules.push(rule);
        }
    }

    /// Answers every `/v1` request with 503 for `duration` (real time).
    pub fn upstream_down(&self, duration: Duration) {
        self.lock().down_until = Some(Instant::now() + duration);
    }

    /// Removes every rule and ends an outage.
    pub fn clear(&self) {
        let mut k = self.lock();
        k.rules.clear();
        k.down_until = None;
    }

    /// Rules with requests left to fail.
    pub fn pending(&self) -> Vec<FaultRule> {
        self.lock().rules.clone()
    }

    /// Time left of an outage, if one is on.
    pub fn down_remaining(&self) -> Option<Duration> {
        let mut k = self.lock();
        match k.down_until {
            Some(t) if t > Instant::now() => Some(t - Instant::now()),
            Some(_) => {
                k.down_until = None;
                None
            }
            None => None,
        }
    }

    /// A snapshot of the request counts.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Counts a streamed response whose client disconnected before its end.
    pub(crate) fn note_abandoned_stream(&self) {
        self.lock().stats.abandoned_streams += 1;
    }

    /// Sets every request count back to zero.
    pub fn reset_stats(&self) {
        self.lock().stats = Stats::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Knobs> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn count(&self, route: &str) {
        let mut k = self.lock();
        k.stats.total += 1;
        *k.stats.by_route.entry(route.to_owned()).or_default() += 1;
    }

    /// Notes a read of job `id`, at `at` (unix milliseconds).
    pub(crate) fn note_job_read(&self, id: &str, at: i64) {
        let mut k = self.lock();
        let reads = k.stats.job_reads.entry(id.to_owned()).or_default();
        if reads.len() == JOB_READS_KEPT {
            reads.pop_front();
        }
        reads.push_back(at);
    }

    /// The fault for this request, consuming one use of the first matching rule.
    pub(crate) fn take(&self, route: &str) -> Option<Fault> {
        let mut k = self.lock();
        let i = k
            .rules
            .iter()
            .position(|r| r.route == "*" || r.route == route)?;
        let rule = &mut k.rules[i];
        rule.times -= 1;
        let fault = rule.fault.clone();
        if rule.times == 0 {
            k.rules.remove(i);
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_routes_and_run_out() {
        let f = FaultControl::default();
        f.inject("POST /v1/fine_tuning/jobs", Fault::ServerError, 2);
        assert_eq!(f.take("GET /v1/fine_tuning/jobs"), None);
        assert_eq!(
            f.take("POST /v1/fine_tuning/jobs"),
            Some(Fault::ServerError)
        );
        assert_eq!(
            f.take("POST /v1/fine_tuning/jobs"),
            Some(Fault::ServerError)
        );
        assert_eq!(f.take("POST /v1/fine_tuning/jobs"), None);
        f.inject("*", Fault::Unavailable, 1);
        assert_eq!(f.take("GET /v1/models"), Some(Fault::Unavailable));
        assert!(f.pending().is_empty());
    }
}
