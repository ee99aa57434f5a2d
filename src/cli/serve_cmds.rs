//! Serving commands: `test` (stream an answer), `promote`, `tiers` and `ab`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::client::{Connection, describe};
use super::words::user_name;
use crate::pb;
use finetune_core::dataset::render::thousands;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The prompt, as the user would type it.
    pub prompt: String,
    /// The tier to ask (default fast).
    #[arg(long, conflicts_with = "model")]
    pub tier: Option<String>,
    /// Ask a model directly instead of a tier.
    #[arg(long)]
    pub model: Option<String>,
    /// A system message before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// The user id (keeps a user on one arm of a split tier).
    #[arg(long, default_value = "")]
    pub user: String,
    #[arg(long, default_value_t = 0)]
    pub max_output_tokens: u32,
    /// Print the final summary as JSON (the answer still streams to stderr).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub(super) fn test(args: &TestArgs) -> ExitCode {
    let runtime = match super::client::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("finetune test: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        match stream(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("\nfinetune test: {e}");
                ExitCode::from(1)
            }
        }
    })
}

async fn stream(args: &TestArgs) -> Result<(), String> {
    let mut client = args.connection.connect().await?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(pb::ChatMessage {
            role: pb::ChatRole::System as i32,
            content: system.clone(),
        });
    }
    messages.push(pb::ChatMessage {
        role: pb::ChatRole::User as i32,
        content: args.prompt.clone(),
    });
    let request = pb::CompleteRequest {
        messages,
        tier: args.tier.clone().unwrap_or_default(),
        model: args.model.clone().unwrap_or_default(),
        max_output_tokens: args.max_output_tokens,
        user_id: args.user.clone(),
        ..Default::default()
    };
    let started = Instant::now();
    let mut first_delta = None;
    let mut stream = client
        .stream_complete(pb::StreamCompleteRequest {
            request: Some(request),
        })
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    while let Some(item) = stream.message().await.map_err(|s| describe(&s))? {
        match item.item {
            Some(pb::stream_complete_response::Item::Delta(text)) => {
                first_delta.get_or_insert_with(|| started.elapsed());
                if args.json {
                    eprint!("{text}");
                } else {
                    print!("{text}");
                    let _ = std::io::stdout().flush();
                }
            }
            Some(pb::stream_complete_response::Item::Completion(c)) => {
                let usage = c.usage.unwrap_or_default();
                let first_ms = first_delta.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                if args.json {
                    eprintln!();
                    outln!(
                        "{}",
                        json!({
                            "response_id": c.response_id, "model": c.model, "provider": c.provider,
                            "tier": c.tier, "arm": c.arm, "finish_reason": c.raw_finish_reason,
                            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                            "cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens,
                            "knowledge_tokens": usage.knowledge_tokens, "cost_usd": c.cost_usd, "latency_ms": c.latency_ms, "first_delta_ms": first_ms,
                            "fallback": c.fallback, "fallback_reason": c.fallback_reason,
                        })
                    );
                } else {
                    outln!("\n");
                    let arm = if c.arm.is_empty() {
                        String::new()
                    } else {
                        format!(" (arm {})", c.arm)
                    };
                    outln!(
                        "model:   {} via tier {}{arm} ({})",
                        c.model,
                        c.tier,
                        c.provider
                    );
                    outln!(
                        "tokens:  {} in ({} cached, {} written to the cache, {} knowledge), {} out",
                        thousands(usage.prompt_tokens),
                        thousands(usage.cached_tokens),
                        thousands(usage.cache_write_tokens),
                        thousands(usage.knowledge_tokens),
                        thousands(usage.completion_tokens)
                    );
                    outln!("cost:    ${:.6}", c.cost_usd);
                    outln!(
                        "latency: {:.0} ms ({first_ms:.0} ms to the first token)",
                        c.latency_ms
                    );
                    if c.fallback {
                        outln!(
                            "note:    answered by the fallback tier: {}",
                            c.fallback_reason
                        );
                    }
                }
                return Ok(());
            }
            None => {}
        }
    }
    Err("the stream ended without a final summary: the answer above may be incomplete".to_owned())
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// A succeeded job whose fine-tuned model is promoted [default: the latest succeeded job].
    pub job: Option<String>,
    /// Promote this model name instead of a job's model.
    #[arg(long, conflicts_with = "job")]
    pub model: Option<String>,
    #[arg(long, default_value = "fast")]
    pub tier: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub(super) fn promote(args: &PromoteArgs) -> ExitCode {
    let result = super::client::runtime().and_then(|rt| {
        rt.block_on(async {
            let mut client = args.connection.connect().await?;
            let source = match (&args.job, &args.model) {
                (Some(job), _) => pb::promote_model_request::Source::JobId(job.clone()),
                (None, Some(model)) => pb::promote_model_request::Source::Model(model.clone()),
                (None, None) => {
                    let latest = client
                        .list_jobs(pb::ListJobsRequest {
                            page_size: 1,
                            state: pb::JobState::Succeeded as i32,
                            ..Default::default()
                        })
                        .await
                        .map_err(|s| describe(&s))?
                        .into_inner();
                    let job = latest
                        .jobs
                        .first()
                        .ok_or("no succeeded job yet: train one, or pass --model")?;
                    pb::promote_model_request::Source::JobId(job.id.clone())
                }
            };
            let request = pb::PromoteModelRequest {
                tier: args.tier.clone(),
                source: Some(source),
            };
            Ok::<_, String>(
                client
                    .promote_model(request)
                    .await
                    .map_err(|s| describe(&s))?
                    .into_inner(),
            )
        })
    });
    match result {
        Ok(r) => {
            let tier = r.tier.unwrap_or_default();
            if args.json {
                outln!(
                    "{}",
                    json!({"tier": tier.name, "model": tier.model, "previous_model": r.previous_model})
                );
            } else {
                let previous = if r.previous_model.is_empty() {
                    "nothing".to_owned()
                } else {
                    r.previous_model
                };
                outln!(
                    "tier {} now serves {} (was {previous})",
                    tier.name,
                    tier.model
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("finetune promote: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this tier (a split tier shows its arms).
    pub tier: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

fn fetch_stats(args: &StatsArgs) -> Result<Vec<pb::TierStats>, String> {
    super::client::runtime().and_then(|rt| {
        rt.block_on(async {
            let mut client = args.connection.connect().await?;
            let request = pb::GetTierStatsRequest {
                tier: args.tier.clone().unwrap_or_default(),
            };
            Ok(client
                .get_tier_stats(request)
                .await
                .map_err(|s| describe(&s))?
                .into_inner()
                .stats)
        })
    })
}

fn stats_json(s: &pb::TierStats) -> serde_json::Value {
    let l = s.latency.unwrap_or_default();
    json!({
        "tier": s.tier, "split": s.split, "model": s.model, "requests": s.requests, "errors": s.errors,
        "p50_ms": l.p50_ms, "p95_ms": l.p95_ms, "p99_ms": l.p99_ms,
        "input_tokens": s.input_tokens, "output_tokens": s.output_tokens, "cached_tokens": s.cached_tokens,
        "knowledge_tokens": s.knowledge_tokens, "cost_usd": s.cost_usd, "cost_per_request_usd": s.cost_per_request_usd,
        "thumbs_up": s.thumbs_up, "thumbs_down": s.thumbs_down, "fallbacks": s.fallbacks,
    })
}

/// `finetune ab`: the arms of split tiers (and every tier) side by side.
pub(super) fn ab(args: &StatsArgs) -> ExitCode {
    match fetch_stats(args) {
        Ok(stats) if args.json => {
            outln!(
                "{}",
                json!({"stats": stats.iter().map(stats_json).collect::<Vec<_>>()})
            );
            ExitCode::SUCCESS
        }
        Ok(stats) => {
            outln!(
                "{:<10} {:<8} {:>8} {:>6} {:>8} {:>8} {:>10} {:>12} {:>5} {:>5}  model",
                "split",
                "tier",
                "requests",
                "errors",
                "p50 ms",
                "p99 ms",
                "out tok",
                "$/request",
                "up",
                "down"
            );
            for s in &stats {
                let l = s.latency.unwrap_or_default();
                let split = if s.split.is_empty() { "-" } else { &s.split };
                outln!(
                    "{split:<10} {:<8} {:>8} {:>6} {:>8.1} {:>8.1} {:>10} {:>12.6} {:>5} {:>5}  {}",
                    s.tier,
                    s.requests,
                    s.errors,
                    l.p50_ms,
                    l.p99_ms,
                    s.output_tokens,
                    s.cost_per_request_usd,
                    s.thumbs_up,
                    s.thumbs_down,
                    s.model
                );
            }
            if stats.is_empty() {
                outln!("nothing served yet");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("finetune ab: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, Args)]
pub struct TiersArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub(super) fn tiers(args: &TiersArgs) -> ExitCode {
    let result = super::client::runtime().and_then(|rt| {
        rt.block_on(async {
            let mut client = args.connection.connect().await?;
            Ok::<_, String>(
                client
                    .list_tiers(pb::ListTiersRequest {})
                    .await
                    .map_err(|s| describe(&s))?
                    .into_inner()
                    .tiers,
            )
        })
    });
    match result {
        Ok(tiers) => {
            for t in &tiers {
                let line = if t.arms.is_empty() {
                    let provider = user_name::<pb::Provider>(t.provider);
                    let model = if t.model.is_empty() {
                        "(no model yet)"
                    } else {
                        &t.model
                    };
                    let knowledge = match (t.inject_knowledge, t.knowledge_tokens) {
                        (false, _) => String::new(),
                        (true, 0) => {
                            ", knowledge injected but none loaded (serve --knowledge FILE)"
                                .to_owned()
                        }
                        (true, n) => format!(", knowledge base injected: {} tokens", thousands(n)),
                    };
                    let fallback = if t.fallback.is_empty() {
                        String::new()
                    } else {
                        format!(", fallback {}", t.fallback)
                    };
                    format!("{:<8} {provider} {model}{knowledge}{fallback}", t.name)
                } else {
                    let arms: Vec<String> = t
                        .arms
                        .iter()
                        .map(|a| format!("{} {}", a.tier, a.weight))
                        .collect();
                    format!("{:<8} split: {}", t.name, arms.join(" / "))
                };
                if args.json {
                    continue;
                }
                outln!("{line}");
            }
            if args.json {
                let rows: Vec<_> = tiers
                    .iter()
                    .map(|t| json!({"name": t.name, "provider": (t.arms.is_empty()).then(|| user_name::<pb::Provider>(t.provider)),
                        "model": t.model, "inject_knowledge": t.inject_knowledge,
                        "knowledge_tokens": t.knowledge_tokens, "fallback": t.fallback,
                        "arms": t.arms.iter().map(|a| json!({"tier": a.tier, "weight": a.weight})).collect::<Vec<_>>()}))
                    .collect();
                outln!("{}", json!({"tiers": rows}));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("finetune tiers: {e}");
            ExitCode::from(2)
        }
    }
}
