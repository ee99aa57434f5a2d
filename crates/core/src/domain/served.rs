//! What is recorded about each served request, and the statistics made from it.

use crate::dataset::InferencePrice;

/// One served (or failed) request.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// The `resp-...` id returned to the caller (failures get one too): the key for ratings.
    pub id: String,
    /// The tier that answered (after any fallback).
    pub tier: String,
    /// The split tier the request came through, or empty.
    pub split: String,
    /// `openai` or `anthropic`; empty when the tier had no provider.
    pub provider: String,
    /// The model that answered (or would have).
    pub model: String,
    /// Whether an answer was returned.
    pub ok: bool,
    /// The error reason (UPPER_SNAKE), for a failure.
    pub error_code: Option<String>,
    /// Whether a fallback tier answered because the first one failed.
    pub fallback: bool,
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Tokens generated.
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write_tokens: u64,
    /// Tokens of the knowledge base injected into the prompt.
    pub knowledge_tokens: u64,
    /// What the request cost, in USD, at the catalog's prices.
    pub cost_usd: f64,
    /// Time from receiving the request to the end of the answer, in milliseconds.
    pub latency_ms: f64,
    /// When it was served, in unix milliseconds.
    pub created_at: i64,
}

/// Figures of one (tier, split) pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierStats {
    /// The tier.
    pub tier: String,
    /// The split tier the requests came through, or empty.
    pub split: String,
    /// The model of the last request counted.
    pub model: String,
    /// Requests counted, failures included.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Median latency of the answered requests, in milliseconds.
    pub p50_ms: f64,
    /// 95th-percentile latency of the answered requests, in milliseconds.
    pub p95_ms: f64,
    /// 99th-percentile latency of the answered requests, in milliseconds.
    pub p99_ms: f64,
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Tokens generated.
    pub output_tokens: u64,
    /// Prompt tokens read from the cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the cache.
    pub cache_write_tokens: u64,
    /// Knowledge-base tokens injected.
    pub knowledge_tokens: u64,
    /// Total cost in USD.
    pub cost_usd: f64,
    /// The catalog's price of `model` (filled by serving, not the store).
    pub price: Option<InferencePrice>,
    /// Responses rated up.
    pub thumbs_up: u64,
    /// Responses rated down.
    pub thumbs_down: u64,
    /// Requests answered by a fallback tier.
    pub fallbacks: u64,
}

impl TierStats {
    /// Average cost in USD of an answered request (0 when none was answered).
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
