//! `finetune cost`: what each tier costs per request and what drives the difference, from
//! what was served; with `--models`, the what-if table: every fine-tunable model's training
//! cost for a dataset and serving cost at the served token mix, beside the injecting tiers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::client::{Connection, describe};
use super::words::count;
use crate::pb;
use finetune_core::dataset::{
    self, Catalog, Input, Options, TokenPrices as Price, render::thousands,
};

#[derive(Debug, Args)]
pub struct CostArgs {
    /// Only this tier (a split tier shows its arms).
    pub tier: Option<String>,
    /// The what-if table: each fine-tunable model in the catalog, its training cost for
    /// --dataset and its serving cost per request at the served token mix, beside the
    /// tiers that inject the knowledge base.
    #[arg(long)]
    pub models: bool,
    /// The training dataset the what-if table prices (JSONL, as for `finetune validate`).
    #[arg(long, default_value = "training-data.jsonl")]
    pub dataset: PathBuf,
    /// Epochs for the training estimate (1-50); default: OpenAI's automatic rule.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub epochs: Option<u32>,
    /// Model catalog for the what-if table (served requests are priced by the server's).
    #[arg(long, env = "FINETUNE_CATALOG")]
    pub catalog: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub(super) fn run(args: &CostArgs) -> ExitCode {
    let fetched = super::client::runtime().and_then(|rt| {
        rt.block_on(async {
            let mut client = args.connection.connect().await?;
            let stats = client
                .get_tier_stats(pb::GetTierStatsRequest {
                    tier: args.tier.clone().unwrap_or_default(),
                })
                .await
                .map_err(|s| describe(&s))?
                .into_inner()
                .stats;
            let tiers = client
                .list_tiers(pb::ListTiersRequest {})
                .await
                .map_err(|s| describe(&s))?
                .into_inner()
                .tiers;
            Ok::<_, String>((stats, tiers))
        })
    });
    let result = fetched.and_then(|(stats, tiers)| {
        let served = merge(&stats);
        if args.models {
            what_if(args, &served, &tiers)
        } else {
            comparison(args.json, &served);
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("finetune cost: {e}");
            ExitCode::from(2)
        }
    }
}

/// A tier's prices as the server reports them (its catalog's, defaults applied).
fn served_price(p: &pb::InferencePrice) -> Price {
    Price {
        input: p.input_usd_per_1m,
        cached_input: p.cached_input_usd_per_1m,
        cache_write: p.cache_write_usd_per_1m,
        output: p.output_usd_per_1m,
    }
}

/// Tokens of an average request. `input` counts every prompt token, the cached and
/// written ones and the knowledge included.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Mix {
    input: f64,
    cached: f64,
    cache_write: f64,
    knowledge: f64,
    output: f64,
}

/// What a request pays for, in USD: each kind of token at its own price.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Parts {
    input: f64,
    cache_read: f64,
    cache_write: f64,
    output: f64,
}

const PART_NAMES: [&str; 4] = [
    "uncached input tokens",
    "cache reads",
    "cache writes",
    "output tokens",
];

impl Parts {
    fn of(mix: Mix, price: Price) -> Parts {
        let [input, cache_read, cache_write, output] =
            price.cost_parts(mix.input, mix.cached, mix.cache_write, mix.output);
        Parts {
            input,
            cache_read,
            cache_write,
            output,
        }
    }

    fn values(self) -> [f64; 4] {
        [self.input, self.cache_read, self.cache_write, self.output]
    }

    fn total(self) -> f64 {
        self.values().iter().sum()
    }

    fn json(self) -> Value {
        json!({"input": self.input, "cache_read": self.cache_read,
            "cache_write": self.cache_write, "output": self.output})
    }
}

/// One tier's served figures, merged over the splits it answered through.
#[derive(Debug, Clone)]
struct Served {
    tier: String,
    model: String,
    answered: u64,
    input: u64,
    cached: u64,
    cache_write: u64,
    knowledge: u64,
    output: u64,
    cost_usd: f64,
    price: Option<pb::InferencePrice>,
}

impl Served {
    fn mix(&self) -> Mix {
        let n = self.answered.max(1) as f64;
        Mix {
            input: self.input as f64 / n,
            cached: self.cached as f64 / n,
            cache_write: self.cache_write as f64 / n,
            knowledge: self.knowledge as f64 / n,
            output: self.output as f64 / n,
        }
    }

    fn per_request(&self) -> f64 {
        self.cost_usd / self.answered.max(1) as f64
    }

    fn parts(&self) -> Option<Parts> {
        self.price
            .as_ref()
            .map(|p| Parts::of(self.mix(), served_price(p)))
    }

    /// The cost per request had every cache write been a read: what a request costs once
    /// the cache is warm (a provider keeps an entry for minutes, so busy tiers stay warm).
    fn warm(&self) -> Option<f64> {
        let mut mix = self.mix();
        mix.cached += mix.cache_write;
        mix.cache_write = 0.0;
        let price = self.price.as_ref()?;
        (self.cache_write > 0).then(|| Parts::of(mix, served_price(price)).total())
    }
}

/// Tiers that answered at least once, in the order the server reports them.
fn merge(stats: &[pb::TierStats]) -> Vec<Served> {
    let mut tiers: Vec<Served> = Vec::new();
    for s in stats {
        let i = match tiers.iter().position(|t| t.tier == s.tier) {
            Some(i) => i,
            None => {
                tiers.push(Served {
                    tier: s.tier.clone(),
                    model: s.model.clone(),
                    answered: 0,
                    input: 0,
                    cached: 0,
                    cache_write: 0,
                    knowledge: 0,
                    output: 0,
                    cost_usd: 0.0,
                    price: s.price.clone(),
                });
                tiers.len() - 1
            }
        };
        let t = &mut tiers[i];
        t.answered += s.requests - s.errors;
        t.input += s.input_tokens;
        t.cached += s.cached_tokens;
        t.cache_write += s.cache_write_tokens;
        t.knowledge += s.knowledge_tokens;
        t.output += s.output_tokens;
        t.cost_usd += s.cost_usd;
    }
    tiers.retain(|t| t.answered > 0);
    tiers
}

/// The cheaper and the dearer of the served tiers, when there are two to compare.
fn extremes(served: &[Served]) -> Option<(&Served, &Served)> {
    let cheapest = served
        .iter()
        .min_by(|a, b| a.per_request().total_cmp(&b.per_request()))?;
    let dearest = served
        .iter()
        .max_by(|a, b| a.per_request().total_cmp(&b.per_request()))?;
    (cheapest.tier != dearest.tier).then_some((cheapest, dearest))
}

/// Per part, what the dearer tier pays more per request, largest first.
fn drivers(cheaper: &Served, dearer: &Served) -> Option<Vec<(&'static str, f64)>> {
    let (c, d) = (cheaper.parts()?, dearer.parts()?);
    let mut parts: Vec<(&'static str, f64)> = PART_NAMES
        .into_iter()
        .zip(d.values().into_iter().zip(c.values()).map(|(d, c)| d - c))
        .collect();
    parts.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some(parts)
}

fn comparison(as_json: bool, served: &[Served]) {
    let extremes = extremes(served);
    if as_json {
        let tiers: Vec<Value> = served.iter().map(served_json).collect();
        let compared = extremes.map(|(c, d)| {
            let saving = d.per_request() - c.per_request();
            json!({
                "cheaper": c.tier, "dearer": d.tier,
                "saving_per_request_usd": saving,
                "saving_per_1000_requests_usd": saving * 1000.0,
                "saving_percent": saving / d.per_request() * 100.0,
                "drivers": drivers(c, d).map(|parts| parts.iter()
                    .map(|(part, usd)| json!({"part": part, "difference_per_request_usd": usd}))
                    .collect::<Vec<_>>()),
            })
        });
        outln!(
            "{}",
            json!({
                "tiers": tiers,
                "comparison": compared,
                "saving_per_request_usd": extremes.map(|(c, d)| d.per_request() - c.per_request()),
                "cheapest": extremes.map(|(c, _)| &c.tier),
                "dearest": extremes.map(|(_, d)| &d.tier),
            })
        );
        return;
    }
    if served.is_empty() {
        outln!("nothing served yet: costs come from answered requests");
        return;
    }
    for t in served {
        describe_tier(t);
    }
    let Some((cheaper, dearer)) = extremes else {
        return;
    };
    let saving = dearer.per_request() - cheaper.per_request();
    outln!(
        "{} costs ${saving:.6} less per request than {} ({:.0}% less): ${:.2} less per 1,000 requests.",
        cheaper.tier,
        dearer.tier,
        saving / dearer.per_request() * 100.0,
        saving * 1000.0
    );
    if let Some(parts) = drivers(cheaper, dearer) {
        let shares: Vec<String> = parts
            .iter()
            .filter(|(_, usd)| usd.abs() >= 5e-7)
            .map(|(part, usd)| {
                let sign = if *usd < 0.0 { "-" } else { "+" };
                format!("{part} {sign}${:.6} ({})", usd.abs(), share(*usd, saving))
            })
            .collect();
        outln!(
            "What drives it, per request ({} minus {}): {}.",
            dearer.tier,
            cheaper.tier,
            shares.join(", ")
        );
        if let Some(&(part, usd)) = parts.first() {
            outln!(
                "Mostly {part} ({} of the difference): {}.",
                share(usd, saving),
                driver_words(part, cheaper, dearer)
            );
        }
    }
    for (with, without) in [(dearer, cheaper), (cheaper, dearer)] {
        if with.knowledge > 0 && without.knowledge == 0 {
            let mix = with.mix();
            outln!(
                "{} sends its {}-token knowledge base with every request ({:.0}% of its input tokens); {} sends none.",
                with.tier,
                thousands(mix.knowledge.round() as u64),
                mix.knowledge / mix.input.max(1.0) * 100.0,
                without.tier
            );
        }
    }
}

/// `part` as a share of `whole`, for people: "81%", "under 1%".
fn share(part: f64, whole: f64) -> String {
    let pct = part / whole * 100.0;
    if pct.abs() < 0.5 {
        "under 1%".to_owned()
    } else {
        format!("{pct:.0}%")
    }
}

/// Why `part` costs the dearer tier more, in words, with the figures behind it.
fn driver_words(part: &str, cheaper: &Served, dearer: &Served) -> String {
    let (c, d) = (cheaper.mix(), dearer.mix());
    let tokens = |v: f64| thousands(v.round() as u64);
    let price = |t: &Served, f: fn(&pb::InferencePrice) -> f64| t.price.as_ref().map_or(0.0, f);
    let knowledge = if d.knowledge > 0.0 {
        format!(" (its knowledge base is {} tokens)", tokens(d.knowledge))
    } else {
        String::new()
    };
    match part {
        "cache writes" => format!(
            "{} writes {} prompt tokens per request to the cache on average{knowledge}, at ${:.2} per 1M; a warm cache reads them instead at ${:.3} per 1M",
            dearer.tier,
            tokens(d.cache_write),
            price(dearer, |p| p.cache_write_usd_per_1m),
            price(dearer, |p| p.cached_input_usd_per_1m)
        ),
        "cache reads" => format!(
            "{} reads {} prompt tokens per request from the cache on average{knowledge}, at ${:.3} per 1M",
            dearer.tier,
            tokens(d.cached),
            price(dearer, |p| p.cached_input_usd_per_1m)
        ),
        "uncached input tokens" => format!(
            "{} sends {} uncached prompt tokens per request at ${:.2} per 1M, {} sends {} at ${:.2}",
            dearer.tier,
            tokens(d.input - d.cached - d.cache_write),
            price(dearer, |p| p.input_usd_per_1m),
            cheaper.tier,
            tokens(c.input - c.cached - c.cache_write),
            price(cheaper, |p| p.input_usd_per_1m)
        ),
        _ => format!(
            "{} answers with {} tokens per request at ${:.2} per 1M, {} with {} at ${:.2}",
            dearer.tier,
            tokens(d.output),
            price(dearer, |p| p.output_usd_per_1m),
            cheaper.tier,
            tokens(c.output),
            price(cheaper, |p| p.output_usd_per_1m)
        ),
    }
}

fn describe_tier(t: &Served) {
    let mix = t.mix();
    let tokens = |v: f64| thousands(v.round() as u64);
    outln!(
        "{}: {} to {}",
        t.tier,
        count(t.answered, "request", "requests"),
        t.model
    );
    let knowledge = if t.knowledge == 0 {
        "no knowledge".to_owned()
    } else {
        format!("{} knowledge", tokens(mix.knowledge))
    };
    outln!(
        "  tokens per request:  {} input ({knowledge}; {} read from the cache, {} written to it), {} output",
        tokens(mix.input),
        tokens(mix.cached),
        tokens(mix.cache_write),
        tokens(mix.output)
    );
    match &t.price {
        Some(p) => outln!(
            "  price per 1M tokens: input ${:.2}, cached input ${:.3}, cache write ${:.2}, output ${:.2} ({} in the server's catalog)",
            p.input_usd_per_1m,
            p.cached_input_usd_per_1m,
            p.cache_write_usd_per_1m,
            p.output_usd_per_1m,
            price_name(p)
        ),
        None => outln!(
            "  price per 1M tokens: none in the server's catalog for {} (its cost counts as $0)",
            t.model
        ),
    }
    match t.parts() {
        Some(parts) => {
            outln!(
                "  cost per request:    ${:.6} = input ${:.6} + cache reads ${:.6} + cache writes ${:.6} + output ${:.6}",
                t.per_request(),
                parts.input,
                parts.cache_read,
                parts.cache_write,
                parts.output
            );
            // The breakdown prices every request at the latest model's price.
            if (parts.total() - t.per_request()).abs() > t.per_request() * 0.005 {
                outln!(
                    "  note: the tier served more than one model; the parts use {}'s prices",
                    t.model
                );
            }
        }
        None => outln!("  cost per request:    ${:.6}", t.per_request()),
    }
    if let Some(warm) = t.warm() {
        outln!(
            "  with a warm cache:   ${warm:.6} per request (every cache write read from the cache instead)"
        );
    }
}

fn price_name(p: &pb::InferencePrice) -> String {
    if p.fine_tuned {
        format!("fine-tuned {}", p.model)
    } else {
        p.model.clone()
    }
}

fn served_json(t: &Served) -> Value {
    let mix = t.mix();
    json!({
        "tier": t.tier, "model": t.model, "requests": t.answered,
        "cost_usd": t.cost_usd, "cost_per_request_usd": t.per_request(),
        "knowledge_tokens_per_request": mix.knowledge,
        "tokens_per_request": {"input": mix.input, "cached": mix.cached,
            "cache_write": mix.cache_write, "knowledge": mix.knowledge, "output": mix.output},
        "price_per_1m_usd": t.price.as_ref().map(|p| json!({
            "model": p.model, "fine_tuned": p.fine_tuned, "input": p.input_usd_per_1m,
            "cached_input": p.cached_input_usd_per_1m, "cache_write": p.cache_write_usd_per_1m,
            "output": p.output_usd_per_1m, "source": p.source})),
        "cost_per_request_parts_usd": t.parts().map(Parts::json),
        "warm_cache_cost_per_request_usd": t.warm(),
    })
}

/// Where the what-if table's token mix comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MixSource {
    /// Tiers without the injection answered: their average request.
    Served,
    /// Only injecting tiers answered: their average request less the knowledge tokens.
    ServedLessKnowledge,
    /// Nothing answered yet: the dataset's average example.
    Dataset,
}

impl MixSource {
    fn as_str(self) -> &'static str {
        match self {
            MixSource::Served => "served",
            MixSource::ServedLessKnowledge => "served_less_knowledge",
            MixSource::Dataset => "dataset",
        }
    }
}

/// One model of the what-if table.
struct ModelRow {
    model: String,
    epochs: u32,
    billed_tokens: u64,
    training_usd_per_1m: f64,
    training_cost_usd: f64,
    price: Option<Price>,
    /// Serving cost per request at the mix, when the catalog prices the fine-tuned model.
    per_request: Option<f64>,
}

/// A tier with the knowledge injection, for the table's comparison.
struct InjectedRow {
    tier: String,
    model: String,
    knowledge_tokens: u64,
    per_request: f64,
    /// Served figures, or an estimate at the mix when the tier has not answered yet.
    measured: bool,
    requests: u64,
}

fn what_if(args: &CostArgs, served: &[Served], tiers: &[pb::Tier]) -> Result<(), String> {
    let catalog = match &args.catalog {
        Some(path) => Catalog::load(path).map_err(|e| e.to_string())?,
        None => Catalog::builtin(),
    };
    let bytes = std::fs::read(&args.dataset)
        .map_err(|e| format!("cannot read {}: {e}", args.dataset.display()))?;
    let name = args.dataset.display().to_string();
    let mut rows = Vec::new();
    let mut dataset_mix = None;
    let mut errors = 0;
    for m in &catalog.models {
        let options = Options {
            model: m.name.clone(),
            epochs: args.epochs,
            ..Options::default()
        };
        let report = dataset::validate(Input::from_bytes(&name, &bytes), None, &options, &catalog)
            .map_err(|e| e.to_string())?;
        errors = report.error_count;
        let t = &report.training;
        if dataset_mix.is_none() && t.examples > 0 {
            // Assistant tokens are what a model answers; the rest is what the caller sends.
            let n = t.examples as f64;
            dataset_mix = Some(Mix {
                input: (t.tokens.total - t.tokens.assistant_total) as f64 / n,
                output: t.tokens.assistant_total as f64 / n,
                ..Mix::default()
            });
        }
        rows.push(ModelRow {
            model: m.name.clone(),
            epochs: report.epochs,
            billed_tokens: report.billed_tokens,
            training_usd_per_1m: report.price_per_million_usd,
            training_cost_usd: report.estimated_cost_usd,
            price: catalog
                .inference_price(&format!("ft:{}:", m.name))
                .map(|p| p.token_prices()),
            per_request: None,
        });
    }
    let plain: Vec<&Served> = served.iter().filter(|t| t.knowledge == 0).collect();
    let (source, requests, mix) = if !plain.is_empty() {
        let (n, mix) = average(&plain);
        (MixSource::Served, n, mix)
    } else if !served.is_empty() {
        let all: Vec<&Served> = served.iter().collect();
        let (n, mut mix) = average(&all);
        mix.input = (mix.input - mix.knowledge).max(0.0);
        (MixSource::ServedLessKnowledge, n, mix)
    } else {
        let mix =
            dataset_mix.ok_or_else(|| format!("{name} has no examples to take a mix from"))?;
        (MixSource::Dataset, 0, mix)
    };
    // Short prompts without the injection stay under the providers' caching minimum.
    let fine_tuned_mix = Mix {
        input: mix.input,
        output: mix.output,
        ..Mix::default()
    };
    for row in &mut rows {
        row.per_request = row.price.map(|p| Parts::of(fine_tuned_mix, p).total());
    }
    let injected = injected_rows(served, tiers, mix, &catalog);
    if args.json {
        print_what_if_json(args, source, requests, mix, &rows, &injected, errors);
    } else {
        print_what_if(args, source, requests, mix, &rows, &injected, errors);
    }
    Ok(())
}

/// The request-weighted average mix of some tiers, and their answered requests.
fn average(tiers: &[&Served]) -> (u64, Mix) {
    let n: u64 = tiers.iter().map(|t| t.answered).sum();
    let sum = |f: fn(&Served) -> u64| tiers.iter().map(|t| f(t)).sum::<u64>() as f64 / n as f64;
    (
        n,
        Mix {
            input: sum(|t| t.input),
            cached: sum(|t| t.cached),
            cache_write: sum(|t| t.cache_write),
            knowledge: sum(|t| t.knowledge),
            output: sum(|t| t.output),
        },
    )
}

/// The tiers that inject the knowledge base: served figures when they answered, else their
/// cost at the mix plus the knowledge read from the cache (a warm cache, at the local
/// catalog's price).
fn injected_rows(
    served: &[Served],
    tiers: &[pb::Tier],
    mix: Mix,
    catalog: &Catalog,
) -> Vec<InjectedRow> {
    let mut rows = Vec::new();
    for t in tiers
        .iter()
        .filter(|t| t.inject_knowledge && t.arms.is_empty())
    {
        if let Some(s) = served.iter().find(|s| s.tier == t.name) {
            rows.push(InjectedRow {
                tier: t.name.clone(),
                model: s.model.clone(),
                knowledge_tokens: (s.knowledge as f64 / s.answered as f64).round() as u64,
                per_request: s.per_request(),
                measured: true,
                requests: s.answered,
            });
        } else if let Some(price) = catalog.inference_price(&t.model) {
            let k = t.knowledge_tokens as f64;
            let warm = Mix {
                input: mix.input + k,
                cached: k,
                output: mix.output,
                ..Mix::default()
            };
            rows.push(InjectedRow {
                tier: t.name.clone(),
                model: t.model.clone(),
                knowledge_tokens: t.knowledge_tokens,
                per_request: Parts::of(warm, price.token_prices()).total(),
                measured: false,
                requests: 0,
            });
        }
    }
    rows
}

/// Requests after which training has paid for itself against the injecting tier.
fn payback(row: &ModelRow, against: Option<&InjectedRow>) -> Option<u64> {
    let saving = against?.per_request - row.per_request?;
    (saving > 0.0).then(|| (row.training_cost_usd / saving).ceil() as u64)
}

fn mix_sentence(source: MixSource, requests: u64, mix: Mix, dataset: &str) -> String {
    let tokens = |v: f64| thousands(v.round() as u64);
    let what = format!(
        "{} prompt tokens and {} output tokens per request",
        tokens(mix.input),
        tokens(mix.output)
    );
    match source {
        MixSource::Served => format!(
            "Token mix: {what}, the average of {} served without the knowledge base.",
            count(requests, "request", "requests")
        ),
        MixSource::ServedLessKnowledge => format!(
            "Token mix: {what}, the average of {} served with the knowledge base, less its tokens.",
            count(requests, "request", "requests")
        ),
        MixSource::Dataset => format!(
            "No traffic yet: the token mix is {dataset}'s average example, {what} (its assistant tokens as output, the rest as prompt)."
        ),
    }
}

fn print_what_if(
    args: &CostArgs,
    source: MixSource,
    requests: u64,
    mix: Mix,
    rows: &[ModelRow],
    injected: &[InjectedRow],
    errors: u64,
) {
    let dataset = args.dataset.display().to_string();
    outln!("{}", mix_sentence(source, requests, mix, &dataset));
    outln!("Training {dataset} and serving each fine-tunable model in the catalog:");
    outln!();
    let against = injected.first();
    let payback_header = against.map_or(String::new(), |a| format!("  pays back vs {}", a.tier));
    outln!(
        "{:<26} {:>6} {:>13} {:>10} {:>12} {:>14}{payback_header}",
        "model",
        "epochs",
        "billed tokens",
        "training",
        "$/request",
        "$/1,000 req"
    );
    for r in rows {
        let training = if r.training_usd_per_1m > 0.0 {
            format!("${:.2}", r.training_cost_usd)
        } else {
            "no price".to_owned()
        };
        let (per_request, per_1000) = match r.per_request {
            Some(p) => (format!("${p:.6}"), format!("${:.2}", p * 1000.0)),
            None => ("no price".to_owned(), "-".to_owned()),
        };
        let pays = match (against, r.training_usd_per_1m > 0.0, payback(r, against)) {
            (None, _, _) => String::new(),
            (Some(_), true, Some(n)) => format!("  after {}", count(n, "request", "requests")),
            (Some(_), _, _) => "  -".to_owned(),
        };
        outln!(
            "{:<26} {:>6} {:>13} {training:>10} {per_request:>12} {per_1000:>14}{pays}",
            r.model,
            r.epochs,
            thousands(r.billed_tokens)
        );
    }
    for i in injected {
        let how = if i.measured {
            format!("served, {}", count(i.requests, "request", "requests"))
        } else {
            "estimated: not served yet; the knowledge read from a warm cache".to_owned()
        };
        outln!(
            "{:<26} {:>6} {:>13} {:>10} {:>12} {:>14}  ({how})",
            format!("{} {}", i.tier, i.model),
            "-",
            "-",
            "-",
            format!("${:.6}", i.per_request),
            format!("${:.2}", i.per_request * 1000.0)
        );
        outln!(
            "{:<26} with the {}-token knowledge base injected",
            "",
            thousands(i.knowledge_tokens)
        );
    }
    outln!();
    outln!(
        "Serving prices are the catalog's fine-tuned [[inference]] entries; \"no price\" means it has none \
         for that model (add one with --catalog FILE). Fine-tuned prompts carry no knowledge base and stay \
         under the caching minimum, so they are priced as uncached input."
    );
    if errors > 0 {
        outln!(
            "note: {dataset} has {}: `finetune validate {dataset}` lists them; the estimate counts the lines as they are.",
            count(errors, "error", "errors")
        );
    }
}

fn print_what_if_json(
    args: &CostArgs,
    source: MixSource,
    requests: u64,
    mix: Mix,
    rows: &[ModelRow],
    injected: &[InjectedRow],
    errors: u64,
) {
    let against = injected.first();
    let models: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "model": r.model, "epochs": r.epochs, "billed_tokens": r.billed_tokens,
                "training_usd_per_1m": r.training_usd_per_1m,
                "training_cost_usd": (r.training_usd_per_1m > 0.0).then_some(r.training_cost_usd),
                "serving_price_per_1m_usd": r.price.map(|p| json!({"input": p.input,
                    "cached_input": p.cached_input, "cache_write": p.cache_write, "output": p.output})),
                "cost_per_request_usd": r.per_request,
                "cost_per_1000_requests_usd": r.per_request.map(|p| p * 1000.0),
                "payback_requests": payback(r, against).filter(|_| r.training_usd_per_1m > 0.0),
            })
        })
        .collect();
    let injected: Vec<Value> = injected
        .iter()
        .map(|i| {
            json!({
                "tier": i.tier, "model": i.model, "knowledge_tokens": i.knowledge_tokens,
                "cost_per_request_usd": i.per_request,
                "cost_per_1000_requests_usd": i.per_request * 1000.0,
                "source": if i.measured { "served" } else { "estimated" }, "requests": i.requests,
            })
        })
        .collect();
    outln!(
        "{}",
        json!({
            "dataset": args.dataset.display().to_string(),
            "dataset_errors": errors,
            "mix": {"source": source.as_str(), "requests": requests,
                "prompt_tokens": mix.input, "output_tokens": mix.output},
            "models": models,
            "injected_tiers": injected,
            "payback_against": against.map(|a| &a.tier),
        })
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_price_each_kind_of_token_and_add_up() {
        let price = Price {
            input: 2.0,
            cached_input: 0.1,
            cache_write: 2.5,
            output: 10.0,
        };
        let mix = Mix {
            input: 1_100.0,
            cached: 600.0,
            cache_write: 400.0,
            knowledge: 1_000.0,
            output: 50.0,
        };
        let p = Parts::of(mix, price);
        assert_eq!(p.input, 100.0 * 2.0 / 1e6);
        assert_eq!(p.cache_read, 600.0 * 0.1 / 1e6);
        assert_eq!(p.cache_write, 400.0 * 2.5 / 1e6);
        assert_eq!(p.output, 50.0 * 10.0 / 1e6);
        assert!((p.total() - 0.00176).abs() < 1e-12);
    }
}
