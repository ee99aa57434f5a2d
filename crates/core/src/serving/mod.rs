//! Serving: tiers (named routes), model promotion, knowledge injection, sticky A/B
//! splits, cost per request, and the record every statistic is made from.

mod split;
pub mod tiers;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::dataset::{Catalog, Counter, Encoding};
use crate::domain::job::now_millis;
use crate::domain::served::Served;
pub use crate::domain::served::TierStats;
use crate::error::{Error, Missing, Precondition};
use crate::ports::UpstreamError;
use crate::ports::chat::{
    Chat, ChatChunk, ChatMessage, ChatRequest, ChatResponse, ChatRole, FinishReason, SystemBlock,
};
use crate::ports::telemetry::Reporter;
use crate::store::Store;
use tiers::{ProviderKind, TierSpec, Tiers};

/// Served records queued for the store; beyond this, records are dropped with a warning
/// rather than slowing requests.
const RECORD_QUEUE: usize = 65_536;

/// The `tier` label of the metrics for requests that name a model instead of a tier
/// (one label for them all, so callers cannot create series by naming models).
const DIRECT_MODEL_TIER: &str = "(model)";
/// How long a request waits for the promotions of a shared store before it is served
/// with the ones read last (see `refresh_promotions`).
const PROMOTIONS_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// A conversation turn as callers send it.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    /// Instructions for the model.
    System(String),
    /// What the end user said.
    User(String),
    /// What the model answered earlier.
    Assistant(String),
}

/// Complete / StreamComplete in the core's terms.
#[derive(Debug, Clone, Default)]
pub struct CompleteRequest {
    /// The conversation, oldest first; it ends with a user turn.
    pub turns: Vec<Turn>,
    /// The tier to route through; empty for the default tier (unless `model` is given).
    pub tier: String,
    /// A model to call directly instead of a tier (no knowledge, no fallback).
    pub model: String,
    /// Sampling temperature; None leaves the provider's default.
    pub temperature: Option<f64>,
    /// Output token limit; 0 takes the tier's `max_output_tokens`.
    pub max_output_tokens: u32,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// The end user's opaque id: it picks the split arm and goes to the provider's abuse monitoring.
    pub user_id: String,
    /// The caller's deadline: no upstream retry is started that would end after it.
    pub deadline: Option<tokio::time::Instant>,
}

/// The answer and its accounting.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The `resp-...` id a caller rates the answer by.
    pub response_id: String,
    /// The answer's text.
    pub text: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    /// `openai` or `anthropic`.
    pub provider: String,
    /// The tier that answered (the fallback tier, when one answered).
    pub tier: String,
    /// The split arm the request was routed to; empty when it came through no split tier.
    pub arm: String,
    /// Why generation stopped, normalised by the adapter.
    pub finish_reason: FinishReason,
    /// The provider's own stop reason (see [`ChatResponse::raw_finish_reason`]).
    pub raw_finish_reason: String,
    /// Prompt tokens, cached ones and the knowledge base included.
    pub input_tokens: u64,
    /// Tokens generated.
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (billed at the cache-write price).
    pub cache_write_tokens: u64,
    /// Tokens of the knowledge base injected into the prompt.
    pub knowledge_tokens: u64,
    /// What the request cost, in USD, at the catalog's prices.
    pub cost_usd: f64,
    /// Whether a fallback tier answered because the first one failed.
    pub fallback: bool,
    /// Why the first tier failed, when a fallback answered.
    pub fallback_reason: String,
    /// Time from receiving the request to the end of the answer, in milliseconds.
    pub latency_ms: f64,
}

/// One item of a streamed completion.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// The next piece of text.
    Delta(String),
    /// The end: the whole completion with its accounting.
    Done(Box<Completion>),
}

/// A tier as it stands now.
#[derive(Debug, Clone)]
pub struct TierView {
    /// The tier's configuration.
    pub spec: TierSpec,
    /// The model it calls now: configured, else promoted, else empty.
    pub model: String,
    /// Knowledge-base tokens it injects into each prompt (0 if it injects none).
    pub knowledge_tokens: u64,
    /// The job whose model was promoted to it, if any.
    pub promoted_from_job: Option<String>,
}

/// The knowledge base injected as the system prompt of tiers that ask for it.
#[derive(Debug, Clone)]
pub struct Knowledge {
    /// The joined text of the knowledge files.
    pub text: String,
    /// Tokens in o200k_base (OpenAI's encoding for gpt-4o; Anthropic's tokenizer
    /// differs, so for Claude this is an approximation and the usage reports the truth).
    pub tokens: u64,
}

impl Knowledge {
    /// Reads and joins knowledge files.
    pub fn load(paths: &[std::path::PathBuf]) -> Result<Option<Knowledge>, Error> {
        if paths.is_empty() {
            return Ok(None);
        }
        let mut parts = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(p).map_err(|e| {
                Error::Config(format!("cannot read knowledge file {}: {e}", p.display()))
            })?;
            parts.push(text);
        }
        let text = parts.join("\n\n");
        let tokens = Counter::new(Encoding::O200kBase).count(&text);
        Ok(Some(Knowledge { text, tokens }))
    }
}

/// The providers serving can call.
#[derive(Clone, Default)]
pub struct Providers {
    /// The OpenAI chat adapter, when a key is configured.
    pub openai: Option<Arc<dyn Chat>>,
    /// The Anthropic chat adapter, when a key is configured.
    pub anthropic: Option<Arc<dyn Chat>>,
}

/// Completions routed through tiers, with fallbacks, A/B splits, promotions and served-request records.
pub struct Serving {
    tiers: Tiers,
    knowledge: Option<Knowledge>,
    providers: Providers,
    catalog: Arc<Catalog>,
    store: Arc<dyn Store>,
    /// Promoted model (and source job) per tier.
    promoted: RwLock<HashMap<String, (String, Option<String>)>>,
    records: mpsc::Sender<Recorder>,
    metrics: Reporter,
}

/// Messages to the background writer of served records.
enum Recorder {
    Record(Box<Served>),
    /// Answered once everything queued before it is in the store.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Where a request goes.
#[derive(Debug, Clone)]
struct Route {
    tier: TierSpec,
    /// The split tier it came through, if any.
    split: String,
}

impl Serving {
    /// Serving over `tiers`, with the promotions saved in `store`; starts the writer of served records.
    pub async fn new(
        tiers: Tiers,
        knowledge: Option<Knowledge>,
        providers: Providers,
        catalog: Arc<Catalog>,
        store: Arc<dyn Store>,
        metrics: Reporter,
    ) -> Result<Arc<Serving>, Error> {
        let promoted = store
            .tier_models()
            .await?
            .into_iter()
            .map(|(tier, model, job)| (tier, (model, job)))
            .collect();
        let (records, mut rx) = mpsc::channel::<Recorder>(RECORD_QUEUE);
        let writer = store.clone();
        // Records are written off the request path, in batches.
        tokio::spawn(async move {
            let mut messages = Vec::new();
            while rx.recv_many(&mut messages, 512).await > 0 {
                let mut batch = Vec::new();
                let mut flushes = Vec::new();
                for m in messages.drain(..) {
                    match m {
                        Recorder::Record(s) => batch.push(*s),
                        Recorder::Flush(ack) => flushes.push(ack),
                    }
                }
                if !batch.is_empty() {
                    if let Err(e) = writer.record_served(&batch).await {
                        warn!(error = %e, count = batch.len(), "cannot record served requests");
                    }
                }
                for ack in flushes {
                    let _ = ack.send(());
                }
            }
        });
        let serving = Arc::new(Serving {
            tiers,
            knowledge,
            providers,
            catalog,
            store,
            promoted: RwLock::new(promoted),
            records,
            metrics,
        });
        if let Some(k) = &serving.knowledge {
            for t in serving.tiers.tiers.iter().filter(|t| t.inject_knowledge) {
                info!(tier = %t.name, tokens = k.tokens, encoding = %"o200k_base", "knowledge base injected into this tier");
            }
        }
        Ok(serving)
    }

    /// The tiers as they stand now, in configuration order.
    pub async fn tiers(&self) -> Vec<TierView> {
        self.refresh_promotions().await;
        let promoted = self.promoted.read().expect("promotions");
        self.tiers
            .tiers
            .iter()
            .map(|t| {
                let (model, job) = match promoted.get(&t.name) {
                    Some((m, j)) if t.model.is_empty() => (m.clone(), j.clone()),
                    _ => (t.model.clone(), None),
                };
                TierView {
                    spec: t.clone(),
                    model,
                    knowledge_tokens: self.knowledge_tokens(t),
                    promoted_from_job: job,
                }
            })
            .collect()
    }

    fn knowledge_tokens(&self, tier: &TierSpec) -> u64 {
        match (&self.knowledge, tier.inject_knowledge) {
            (Some(k), true) => k.tokens,
            _ => 0,
        }
    }

    /// Makes `model` the one `tier` serves, persisted; returns the previous model.
    pub async fn promote(
        &self,
        tier: &str,
        model: &str,
        job_id: Option<&str>,
    ) -> Result<String, Error> {
        let spec = self.tiers.get(tier).ok_or_else(|| unknown_tier(tier))?;
        if spec.is_split() {
            return Err(Error::invalid(
                "tier",
                format!("{tier} is a split tier; promote to one of its arms"),
            ));
        }
        if !spec.model.is_empty() {
            return Err(Error::FailedPrecondition {
                message: format!(
                    "tier {tier} is pinned to {} in the tiers file; leave its model empty to serve promoted models",
                    spec.model
                ),
                reason: Precondition::TierPinned,
                violations: Vec::new(),
            });
        }
        if model.is_empty() {
            return Err(Error::invalid("model", "required"));
        }
        // The previous model is the one any replica promoted last.
        self.refresh_promotions().await;
        self.store.set_tier_model(tier, model, job_id).await?;
        let previous = self
            .promoted
            .write()
            .expect("promotions")
            .insert(
                tier.to_owned(),
                (model.to_owned(), job_id.map(str::to_owned)),
            )
            .map(|(m, _)| m)
            .unwrap_or_default();
        info!(
            tier = %tier,
            model = %model,
            job_id = job_id.map(tracing::field::display),
            previous = %previous,
            "promoted model"
        );
        Ok(previous)
    }

    /// With a store other processes write too, reads the promotions before a request, so
    /// a promotion made through any replica is served from the next request on. The read
    /// gets [`PROMOTIONS_READ_TIMEOUT`]: on the live request path, a slow or unreachable
    /// database leaves the promotions this process last read in force rather than
    /// holding the request up.
    async fn refresh_promotions(&self) {
        if !self.store.is_shared() {
            return;
        }
        match tokio::time::timeout(PROMOTIONS_READ_TIMEOUT, self.store.tier_models()).await {
            Ok(Ok(rows)) => {
                let fresh = rows
                    .into_iter()
                    .map(|(tier, model, job)| (tier, (model, job)))
                    .collect();
                *self.promoted.write().expect("promotions") = fresh;
            }
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the promotions; serving the ones read last")
            }
            Err(_) => warn!(
                timeout_ms = PROMOTIONS_READ_TIMEOUT.as_millis() as u64,
                "reading the promotions timed out; serving the ones read last"
            ),
        }
    }

    /// The tier that auto-promotion targets, if configured.
    pub fn auto_promote_tier(&self) -> Option<&str> {
        Some(self.tiers.auto_promote.as_str()).filter(|t| !t.is_empty())
    }

    fn route(&self, req: &CompleteRequest) -> Result<Route, Error> {
        if !req.model.is_empty() {
            if !req.tier.is_empty() {
                return Err(Error::invalid("model", "give a tier or a model, not both"));
            }
            let provider = ProviderKind::of_model(&req.model);
            let tier = TierSpec {
                name: format!("model:{}", req.model),
                provider: Some(provider),
                model: req.model.clone(),
                inject_knowledge: false,
                fallback: None,
                split: Vec::new(),
                max_output_tokens: 4096,
            };
            return Ok(Route {
                tier,
                split: String::new(),
            });
        }
        let name = if req.tier.is_empty() {
            "fast"
        } else {
            req.tier.as_str()
        };
        let spec = self.tiers.get(name).ok_or_else(|| unknown_tier(name))?;
        if spec.is_split() {
            let arm = &spec.split[split::choose(&spec.name, &spec.split, &req.user_id)];
            let target = self.tiers.get(&arm.tier).expect("checked at load").clone();
            return Ok(Route {
                tier: target,
                split: spec.name.clone(),
            });
        }
        Ok(Route {
            tier: spec.clone(),
            split: String::new(),
        })
    }

    fn model_of(&self, tier: &TierSpec) -> Option<String> {
        if !tier.model.is_empty() {
            return Some(tier.model.clone());
        }
        self.promoted
            .read()
            .expect("promotions")
            .get(&tier.name)
            .map(|(m, _)| m.clone())
    }

    /// The provider and upstream request for a tier, or why it cannot answer.
    fn prepare(
        &self,
        tier: &TierSpec,
        req: &CompleteRequest,
    ) -> Result<(Arc<dyn Chat>, ChatRequest, u64), Error> {
        let Some(model) = self.model_of(tier) else {
            return Err(Error::FailedPrecondition {
                message: format!(
                    "tier {} has no model yet: train one and promote it (finetune promote JOB --tier {}), or configure a fallback tier",
                    tier.name, tier.name
                ),
                reason: Precondition::TierHasNoModel,
                violations: Vec::new(),
            });
        };
        let kind = tier.provider.expect("plain tiers have a provider");
        let provider = match kind {
            ProviderKind::Openai => self.providers.openai.clone(),
            ProviderKind::Anthropic => self.providers.anthropic.clone(),
        }
        .ok_or_else(|| Error::FailedPrecondition {
            message: format!(
                "tier {} needs the {} provider, which is not configured (set {}_API_KEY, or run with --emulator)",
                tier.name,
                kind.as_str(),
                kind.as_str().to_uppercase()
            ),
            reason: Precondition::ProviderNotConfigured,
            violations: Vec::new(),
        })?;
        let mut system = Vec::new();
        let knowledge_tokens = self.knowledge_tokens(tier);
        if let (Some(k), true) = (&self.knowledge, tier.inject_knowledge) {
            system.push(SystemBlock {
                text: k.text.clone(),
                cache: true,
            });
        }
        let mut messages = Vec::new();
        for turn in &req.turns {
            match turn {
                Turn::System(text) => system.push(SystemBlock {
                    text: text.clone(),
                    cache: false,
                }),
                Turn::User(text) => messages.push(ChatMessage {
                    role: ChatRole::User,
                    content: text.clone(),
                }),
                Turn::Assistant(text) => messages.push(ChatMessage {
                    role: ChatRole::Assistant,
                    content: text.clone(),
                }),
            }
        }
        let max_tokens = if req.max_output_tokens == 0 {
            tier.max_output_tokens
        } else {
            req.max_output_tokens
        };
        let chat = ChatRequest {
            model,
            system,
            messages,
            temperature: req.temperature,
            max_tokens,
            stop: req.stop.clone(),
            user: Some(req.user_id.clone()).filter(|u| !u.is_empty()),
            deadline: req.deadline,
        };
        Ok((provider, chat, knowledge_tokens))
    }

    /// Whether a failure of `tier` should be answered by its fallback.
    fn fallback_for(&self, tier: &TierSpec, err: &Error) -> Option<(TierSpec, String)> {
        let fallback = self.tiers.get(tier.fallback.as_deref()?)?.clone();
        let reason = match err {
            Error::FailedPrecondition {
                reason: Precondition::TierHasNoModel,
                ..
            } => format!("tier {} has no model yet", tier.name),
            Error::Upstream(UpstreamError::NotFound { message, .. }) => {
                format!("tier {}'s model is not available: {message}", tier.name)
            }
            Error::Upstream(e) if e.is_retryable() => {
                format!("tier {} is unavailable: {e}", tier.name)
            }
            _ => return None,
        };
        Some((fallback, reason))
    }

    /// Answers `req` in one response, falling back to the tier's fallback when the first fails.
    pub async fn complete(&self, req: CompleteRequest) -> Result<Completion, Error> {
        validate(&req)?;
        let started = Instant::now();
        self.refresh_promotions().await;
        let route = self.route(&req)?;
        let result = match self.call(&route.tier, &req).await {
            Err(e) => match self.fallback_for(&route.tier, &e) {
                Some((fallback, reason)) => {
                    warn!(tier = %route.tier.name, fallback = %fallback.name, %reason, "answering from the fallback tier");
                    self.call(&fallback, &req)
                        .await
                        .map(|(c, t)| (c, t, Some(reason)))
                }
                None => Err(e),
            },
            Ok((c, t)) => Ok((c, t, None)),
        };
        match result {
            Ok((response, tier, fallback)) => {
                let completion = self.finish(&route, &tier, response, fallback, started);
                Ok(completion)
            }
            Err(e) => {
                self.record_failure(&route, &e, started);
                Err(e)
            }
        }
    }

    async fn call(
        &self,
        tier: &TierSpec,
        req: &CompleteRequest,
    ) -> Result<(ChatResponse, TierSpec), Error> {
        let (provider, chat, _) = self.prepare(tier, req)?;
        let response = provider.complete(&chat).await?;
        Ok((response, tier.clone()))
    }

    /// Streams a completion; dropping the receiver cancels the upstream request.
    pub async fn stream(
        self: &Arc<Self>,
        req: CompleteRequest,
    ) -> Result<mpsc::Receiver<Result<StreamItem, Error>>, Error> {
        validate(&req)?;
        let started = Instant::now();
        self.refresh_promotions().await;
        let route = self.route(&req)?;
        let opened = match self.open_stream(&route.tier, &req).await {
            Err(e) => match self.fallback_for(&route.tier, &e) {
                Some((fallback, reason)) => self
                    .open_stream(&fallback, &req)
                    .await
                    .map(|(s, t)| (s, t, Some(reason))),
                None => Err(e),
            },
            Ok((s, t)) => Ok((s, t, None)),
        };
        let (mut upstream, tier, fallback) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.record_failure(&route, &e, started);
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = upstream.next() => next,
                    () = tx.closed() => {
                        // The caller went away: dropping `upstream` cancels the provider request.
                        let e = Error::Cancelled("the client cancelled the stream".to_owned());
                        this.record_failure(&route, &e, started);
                        return;
                    }
                };
                let item = match next {
                    Some(Ok(ChatChunk::Delta(text))) => Ok(StreamItem::Delta(text)),
                    Some(Ok(ChatChunk::Done(response))) => {
                        let completion =
                            this.finish(&route, &tier, response, fallback.clone(), started);
                        let _ = tx.send(Ok(StreamItem::Done(Box::new(completion)))).await;
                        return;
                    }
                    Some(Err(e)) => Err(Error::from(e)),
                    None => Err(Error::Upstream(UpstreamError::Unavailable {
                        provider: "upstream",
                        status: None,
                        message: "the provider's stream ended without its final event".to_owned(),
                    })),
                };
                if let Err(e) = &item {
                    this.record_failure(&route, e, started);
                    let _ = tx.send(item).await;
                    return;
                }
                if tx.send(item).await.is_err() {
                    let e = Error::Cancelled("the client cancelled the stream".to_owned());
                    this.record_failure(&route, &e, started);
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn open_stream(
        &self,
        tier: &TierSpec,
        req: &CompleteRequest,
    ) -> Result<(crate::ports::chat::ChatStream, TierSpec), Error> {
        let (provider, chat, _) = self.prepare(tier, req)?;
        let stream = provider.stream(&chat).await?;
        Ok((stream, tier.clone()))
    }

    /// Accounts for an answered request and records it.
    fn finish(
        &self,
        route: &Route,
        tier: &TierSpec,
        response: ChatResponse,
        fallback: Option<String>,
        started: Instant,
    ) -> Completion {
        let usage = response.usage;
        let cost = self.cost(&response);
        let tier_label = match self.tiers.get(&tier.name) {
            Some(_) => tier.name.as_str(),
            None => DIRECT_MODEL_TIER,
        };
        self.metrics.completion(tier_label, &usage, cost);
        let completion = Completion {
            response_id: format!("resp-{}", uuid::Uuid::new_v4().simple()),
            text: response.text,
            model: response.model,
            provider: tier.provider.map_or("", ProviderKind::as_str).to_owned(),
            tier: tier.name.clone(),
            arm: if route.split.is_empty() {
                String::new()
            } else {
                route.tier.name.clone()
            },
            finish_reason: response.finish_reason,
            raw_finish_reason: response.raw_finish_reason,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_tokens: usage.cache_read_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            knowledge_tokens: self.knowledge_tokens(tier),
            cost_usd: cost,
            fallback: fallback.is_some(),
            fallback_reason: fallback.unwrap_or_default(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        self.record(Served {
            id: completion.response_id.clone(),
            tier: completion.tier.clone(),
            split: route.split.clone(),
            provider: completion.provider.clone(),
            model: completion.model.clone(),
            ok: true,
            error_code: None,
            fallback: completion.fallback,
            input_tokens: completion.input_tokens,
            output_tokens: completion.output_tokens,
            cached_tokens: completion.cached_tokens,
            cache_write_tokens: completion.cache_write_tokens,
            knowledge_tokens: completion.knowledge_tokens,
            cost_usd: completion.cost_usd,
            latency_ms: completion.latency_ms,
            created_at: now_millis(),
        });
        completion
    }

    fn record_failure(&self, route: &Route, err: &Error, started: Instant) {
        self.record(Served {
            id: format!("resp-{}", uuid::Uuid::new_v4().simple()),
            tier: route.tier.name.clone(),
            split: route.split.clone(),
            provider: route
                .tier
                .provider
                .map_or("", ProviderKind::as_str)
                .to_owned(),
            model: self.model_of(&route.tier).unwrap_or_default(),
            ok: false,
            error_code: Some(err.reason().to_owned()),
            fallback: false,
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            cache_write_tokens: 0,
            knowledge_tokens: 0,
            cost_usd: 0.0,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            created_at: now_millis(),
        });
    }

    fn record(&self, served: Served) {
        if self
            .records
            .try_send(Recorder::Record(Box::new(served)))
            .is_err()
        {
            warn!("the served-request record queue is full; a record was dropped");
        }
    }

    /// Waits until every record queued so far is in the store, so reads see all answers.
    async fn flush(&self) {
        let (ack, done) = tokio::sync::oneshot::channel();
        if self.records.send(Recorder::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// The cost of a response from the catalog's inference prices.
    fn cost(&self, response: &ChatResponse) -> f64 {
        let Some(price) = self.catalog.inference_price(&response.model) else {
            warn!(model = %response.model, "no inference price in the catalog; cost reported as 0");
            return 0.0;
        };
        let u = response.usage;
        price
            .token_prices()
            .cost_parts(
                u.input_tokens as f64,
                u.cache_read_tokens as f64,
                u.cache_write_tokens as f64,
                u.output_tokens as f64,
            )
            .iter()
            .sum()
    }

    /// Rates a response: `up` true for a thumbs up. Returns (tier, split).
    pub async fn feedback(&self, response_id: &str, up: bool) -> Result<(String, String), Error> {
        let rating = if up { 1 } else { -1 };
        let mut rated = self.store.rate(response_id, rating).await?;
        if rated.is_none() {
            // A response answered a moment ago may still be in the record queue: a user
            // who rates it at once must not be told it does not exist.
            self.flush().await;
            rated = self.store.rate(response_id, rating).await?;
        }
        rated.ok_or_else(|| Error::NotFound {
            what: format!("response {response_id}"),
            missing: Missing::Response(response_id.to_owned()),
        })
    }

    /// Figures per (tier, split) from the served records, after writing the queued ones.
    pub async fn stats(&self, tier: Option<&str>) -> Result<Vec<TierStats>, Error> {
        if let Some(t) = tier {
            self.tiers.get(t).ok_or_else(|| unknown_tier(t))?;
        }
        self.flush().await;
        let mut stats = self.store.tier_stats(tier).await?;
        for s in &mut stats {
            s.price = self.catalog.inference_price(&s.model).cloned();
        }
        Ok(stats)
    }
}

fn unknown_tier(name: &str) -> Error {
    Error::NotFound {
        what: format!("tier {name}"),
        missing: Missing::Tier(name.to_owned()),
    }
}

fn validate(req: &CompleteRequest) -> Result<(), Error> {
    if !req.turns.iter().any(|t| matches!(t, Turn::User(_))) {
        return Err(Error::invalid(
            "messages",
            "at least one user message is required",
        ));
    }
    if !matches!(req.turns.last(), Some(Turn::User(_))) {
        return Err(Error::invalid(
            "messages",
            "the last message must be the user's",
        ));
    }
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(Error::invalid("temperature", "must be between 0 and 2"));
        }
    }
    if req.stop.len() > 4 {
        return Err(Error::invalid("stop", "at most 4 stop sequences"));
    }
    Ok(())
}
