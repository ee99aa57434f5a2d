//! What is recorded about each served request, and the statistics made from it.

use crate::dataset::InferencePrice;

/// One served (or failed) request.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub id: String,
    /// The tier that answered (after any fallback).
    pub tier: String,
    /// The split tier the request came through, or empty.
    pub split: String,
    pub provider: String,
    pub model: String,
    pub ok: bool,
    pub error_code: Option<String>,
    pub fallback: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub knowledge_tokens: u64,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub created_at: i64,
}

/// Figures of one (tier, split) pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierStats {
    pub tier: String,
    pub split: String,
    pub model: String,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub knowledge_tokens: u64,
    pub cost_usd: f64,
    /// The catalog's price of `model` (filled by serving, not the store).
    pub price: Option<InferencePrice>,
    pub thumbs_up: u64,
    pub thumbs_down: u64,
    pub fallbacks: u64,
}

impl TierStats {
    pub fn cost_per_request(&self) -> f64 {
        let answered = self.requests - self.errors;
        if answered == 0 {
            0.0
        } else {
            self.cost_usd / answered as f64
        }
    }
}

/// The `q` quantile of sorted latencies (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
