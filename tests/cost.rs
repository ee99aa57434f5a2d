//! `finetune cost` and `finetune tiers` through the real CLI against a server on the
//! emulators, serving the shipped knowledge base: the comparison is like for like (pro pays
//! for the injected tokens, fast does not), its figures are the catalog's prices applied to
//! the recorded usage, and the what-if table agrees with `finetune validate` for every model.

use crate::common;

use common::TestServer;
use common::prices::{Price, price};
use finetune_emulator::Emulator;
use serde_json::Value;

const TIERS: &str = r#"
[[tier]]
name = "fast"
provider = "openai"

[[tier]]
name = "pro"
provider = "anthropic"
model = "claude-sonnet-5-5"
inject_knowledge = true
"#;

async fn server_for(emulator: &Emulator, dir: &std::path::Path) -> TestServer {
    let tiers = dir.join("tiers.toml");
    std::fs::write(&tiers, TIERS).unwrap();
    let base = emulator.base_url();
    let root = base.trim_end_matches("/v1").to_owned();
    TestServer::start_with(move |c| {
        c.openai_base_url = Some(base);
        c.openai_api_key = Some("sk-test-cost".into());
        c.anthropic_base_url = Some(root);
        c.anthropic_api_key = Some("sk-ant-test-cost".into());
        c.tiers = Some(tiers);
        c.knowledge = vec![common::repo_file("examples/knowledge-base.md")];
        c.poll_interval_seconds = Some(0.05);
    })
    .await
}

/// Runs the CLI against `addr`; panics with its stderr unless it exits 0.
fn cli(addr: &str, args: &[&str]) -> String {
    let out = common::finetune_command(Some(addr), args)
        .env_remove("FINETUNE_CATALOG")
        .current_dir(common::repo_file(""))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "finetune {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn cli_json(addr: &str, args: &[&str]) -> Value {
    let out = cli(addr, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("finetune {args:?}: {e}: {out}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 + 1e-9 * b.abs()
}

/// Usage summed over `test --json` summaries.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    requests: u64,
    input: u64,
    cached: u64,
    cache_write: u64,
    knowledge: u64,
    output: u64,
    cost: f64,
}

impl Usage {
    fn add(&mut self, summary: &Value) {
        let n = |k: &str| summary[k].as_u64().unwrap();
        self.requests += 1;
        self.input += n("prompt_tokens");
        self.cached += n("cached_tokens");
        self.cache_write += n("cache_write_tokens");
        self.knowledge += n("knowledge_tokens");
        self.output += n("completion_tokens");
        self.cost += summary["cost_usd"].as_f64().unwrap();
    }

    /// Per request, (uncached input, cache reads, cache writes, output) in USD at `p`.
    fn parts(self, p: Price) -> [f64; 4] {
        let n = self.requests as f64;
        [
            (self.input - self.cached - self.cache_write) as f64 * p.input / 1e6 / n,
            self.cached as f64 * p.cached_input / 1e6 / n,
            self.cache_write as f64 * p.cache_write / 1e6 / n,
            self.output as f64 * p.output / 1e6 / n,
        ]
    }
}

fn ask(addr: &str, tier: &str, prompt: &str) -> Value {
    let summary = cli_json(addr, &["test", prompt, "--tier", tier, "--json"]);
    assert_eq!(summary["tier"], tier, "{summary}");
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_explains_what_the_knowledge_injection_costs_and_the_what_if_table_agrees_with_validate()
 {
    let emulator = common::emulator(1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server_for(&emulator, dir.path()).await;
    let addr = server.addr.to_string();
    tokio::task::spawn_blocking(move || check(&addr))
        .await
        .unwrap();
    server.stop().await;
    emulator.shutdown().await;
}

fn check(addr: &str) {
    // Before any traffic: the what-if table takes its mix from the dataset, and says so.
    let idle = cli_json(
        addr,
        &[
            "cost",
            "--models",
            "--dataset",
            "examples/training-data.jsonl",
            "--json",
        ],
    );
    let validate = cli_json(
        addr,
        &["validate", "examples/training-data.jsonl", "--json"],
    );
    let (total, assistant, examples) = (
        validate["tokens"]["total"].as_f64().unwrap(),
        validate["tokens"]["assistant_total"].as_f64().unwrap(),
        validate["examples"].as_f64().unwrap(),
    );
    assert_eq!(idle["mix"]["source"], "dataset", "{idle}");
    assert!(close(
        idle["mix"]["prompt_tokens"].as_f64().unwrap(),
        (total - assistant) / examples
    ));
    assert!(close(
        idle["mix"]["output_tokens"].as_f64().unwrap(),
        assistant / examples
    ));
    assert_eq!(idle["injected_tiers"][0]["tier"], "pro");
    assert_eq!(idle["injected_tiers"][0]["source"], "estimated");
    assert!(cli(addr, &["cost"]).contains("nothing served yet"));

    // `tiers` names providers as the tiers file does and shows the injection's size.
    let tiers = cli(addr, &["tiers"]);
    let listed = cli_json(addr, &["tiers", "--json"]);
    let knowledge = listed["tiers"][1]["knowledge_tokens"].as_u64().unwrap();
    assert!(
        (15_000..21_000).contains(&knowledge),
        "the shipped knowledge base is about 18K tokens, not {knowledge}"
    );
    assert!(tiers.contains("fast     openai (no model yet)"), "{tiers}");
    assert!(
        tiers.contains(&format!(
            "pro      anthropic claude-sonnet-5-5, knowledge base injected: {} tokens",
            finetune_core::dataset::render::thousands(knowledge)
        )),
        "{tiers}"
    );
    assert!(!tiers.contains("PROVIDER_"), "{tiers}");
    assert_eq!(listed["tiers"][0]["provider"], "openai");

    // The quickstart: train, promote, ask each tier.
    cli(
        addr,
        &[
            "train",
            "examples/training-data.jsonl",
            "--suffix",
            "cost",
            "--yes",
            "--watch",
        ],
    );
    let promoted = cli_json(addr, &["promote", "--tier", "fast", "--json"]);
    let fast_model = promoted["model"].as_str().unwrap().to_owned();
    assert!(
        fast_model.starts_with("ft:gpt-4o-2024-08-06:"),
        "{promoted}"
    );

    let mut fast = Usage::default();
    let mut pro = Usage::default();
    fast.add(&ask(
        addr,
        "fast",
        "Build me a landing page with dark theme",
    ));
    pro.add(&ask(addr, "pro", "Build me a landing page with dark theme"));
    pro.add(&ask(addr, "pro", "Make the cards bigger"));
    assert_eq!(pro.knowledge, 2 * knowledge);
    assert!(
        pro.cache_write >= knowledge && pro.cached >= knowledge,
        "the first pro request writes the knowledge to the cache, the second reads it: {pro:?}"
    );
    assert_eq!(
        fast.knowledge + fast.cached + fast.cache_write,
        0,
        "{fast:?}"
    );

    let cost = cli_json(addr, &["cost", "--json"]);
    let row = |tier: &str| {
        cost["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tier"] == tier)
            .unwrap_or_else(|| panic!("no {tier} in {cost}"))
            .clone()
    };
    for (tier, usage, price) in [
        ("fast", fast, price("gpt-4o-2024-08-06", true)),
        ("pro", pro, price("claude-sonnet-5-5", false)),
    ] {
        let r = row(tier);
        let n = usage.requests as f64;
        assert_eq!(r["requests"].as_u64(), Some(usage.requests), "{r}");
        let tokens = &r["tokens_per_request"];
        for (key, sum) in [
            ("input", usage.input),
            ("cached", usage.cached),
            ("cache_write", usage.cache_write),
            ("knowledge", usage.knowledge),
            ("output", usage.output),
        ] {
            assert!(
                close(tokens[key].as_f64().unwrap(), sum as f64 / n),
                "{tier} {key}: {r}"
            );
        }
        let prices = &r["price_per_1m_usd"];
        assert_eq!(prices["input"].as_f64(), Some(price.input), "{r}");
        assert_eq!(prices["cached_input"].as_f64(), Some(price.cached_input));
        assert_eq!(prices["cache_write"].as_f64(), Some(price.cache_write));
        assert_eq!(prices["output"].as_f64(), Some(price.output));
        let parts = usage.parts(price);
        let reported = &r["cost_per_request_parts_usd"];
        for (key, want) in ["input", "cache_read", "cache_write", "output"]
            .into_iter()
            .zip(parts)
        {
            assert!(
                close(reported[key].as_f64().unwrap(), want),
                "{tier} {key}: {r}"
            );
        }
        let per_request = r["cost_per_request_usd"].as_f64().unwrap();
        assert!(close(per_request, usage.cost / n), "{r}");
        assert!(close(per_request, parts.iter().sum()), "{r}");
    }
    let fast_cost = fast.cost / fast.requests as f64;
    let pro_cost = pro.cost / pro.requests as f64;
    assert!(
        fast_cost < pro_cost,
        "fast, without the injection, is cheaper"
    );
    let compared = &cost["comparison"];
    assert_eq!(compared["cheaper"], "fast");
    assert_eq!(compared["dearer"], "pro");
    let saving = compared["saving_per_request_usd"].as_f64().unwrap();
    assert!(close(saving, pro_cost - fast_cost));
    assert!(close(
        compared["saving_per_1000_requests_usd"].as_f64().unwrap(),
        saving * 1000.0
    ));
    let drivers: f64 = compared["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["difference_per_request_usd"].as_f64().unwrap())
        .sum();
    assert!(
        close(drivers, saving),
        "the drivers add up to the difference"
    );

    let human = cli(addr, &["cost"]);
    for want in [
        "fast: 1 request to ft:gpt-4o-2024-08-06:",
        "pro: 2 requests to claude-sonnet-5-5",
        &format!(
            "pro sends its {}-token knowledge base with every request",
            finetune_core::dataset::render::thousands(knowledge)
        ),
        &format!("fast costs ${saving:.6} less per request than pro"),
        "What drives it, per request (pro minus fast): ",
    ] {
        assert!(human.contains(want), "no {want:?} in:\n{human}");
    }
    assert!(!human.contains("1 requests"), "{human}");

    // The what-if table: the validator's estimate per model, priced at fast's served mix.
    let table = cli_json(
        addr,
        &[
            "cost",
            "--models",
            "--dataset",
            "examples/training-data.jsonl",
            "--json",
        ],
    );
    assert_eq!(table["mix"]["source"], "served", "{table}");
    assert_eq!(table["mix"]["requests"], 1);
    let (prompt, output) = (fast.input as f64, fast.output as f64);
    let models = table["models"].as_array().unwrap();
    let catalog = finetune_core::dataset::Catalog::builtin();
    assert_eq!(models.len(), catalog.models.len());
    let pro_row = &table["injected_tiers"][0];
    assert_eq!(pro_row["source"], "served");
    assert!(close(
        pro_row["cost_per_request_usd"].as_f64().unwrap(),
        pro_cost
    ));
    for (m, info) in models.iter().zip(&catalog.models) {
        let name = info.name.as_str();
        assert_eq!(m["model"], name);
        let estimate = cli_json(
            addr,
            &[
                "validate",
                "examples/training-data.jsonl",
                "--model",
                name,
                "--json",
            ],
        );
        assert_eq!(m["epochs"], estimate["epochs"], "{name}");
        assert_eq!(m["billed_tokens"], estimate["billed_tokens"], "{name}");
        let training = estimate["estimated_cost_usd"].as_f64().unwrap();
        if info.training_usd_per_1m > 0.0 {
            assert!(
                close(m["training_cost_usd"].as_f64().unwrap(), training),
                "{name}"
            );
        } else {
            assert!(
                m["training_cost_usd"].is_null(),
                "{name}: no price, no cost"
            );
        }
        let serving = ["gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18"]
            .contains(&name)
            .then(|| {
                let p = price(name, true);
                (prompt * p.input + output * p.output) / 1e6
            });
        assert_eq!(
            m["cost_per_request_usd"].as_f64().is_some(),
            serving.is_some(),
            "{name}"
        );
        if let Some(want) = serving {
            assert!(
                close(m["cost_per_request_usd"].as_f64().unwrap(), want),
                "{name}"
            );
            let payback = (training / (pro_cost - want)).ceil() as u64;
            assert_eq!(m["payback_requests"].as_u64(), Some(payback), "{name}");
        }
    }
    let text = cli(
        addr,
        &[
            "cost",
            "--models",
            "--dataset",
            "examples/training-data.jsonl",
        ],
    );
    assert!(
        text.contains("the average of 1 request served without the knowledge base"),
        "{text}"
    );
    assert!(text.contains("pro claude-sonnet-5-5"), "{text}");
}
