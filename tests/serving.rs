//! Complete and StreamComplete through real gRPC clients against the server and the
//! emulators: both providers, promotion, knowledge injection with prompt caching, the
//! sticky split, fallback, cancellation, feedback and statistics.

use crate::common;

use std::time::Duration;

use common::TestServer;
use finetune::pb;
use finetune::pb::stream_complete_response::Item;
use finetune_emulator::Emulator;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

/// ~2,000 words: well over Anthropic's 1,024-token minimum for caching.
fn knowledge_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("knowledge.md");
    let mut text = String::from("# File Engine knowledge base\n\n");
    for i in 0..200 {
        text.push_str(&format!(
            "Rule {i}: prefer semantic HTML, accessible contrast, and React hooks with stable dependencies.\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

const TIERS: &str = r#"
auto_promote = ""

[[tier]]
name = "fast"
provider = "openai"
model = ""
fallback = "pro"

[[tier]]
name = "strict"
provider = "openai"
model = ""

[[tier]]
name = "pro"
provider = "anthropic"
model = "claude-sonnet-5-5"
inject_knowledge = true

[[tier]]
name = "auto"
split = [{ tier = "pro", weight = 50 }, { tier = "mini", weight = 50 }]

[[tier]]
name = "mini"
provider = "openai"
model = "gpt-4o-mini"
"#;

async fn server_for(emulator: &Emulator, dir: &std::path::Path) -> TestServer {
    let tiers = dir.join("tiers.toml");
    std::fs::write(&tiers, TIERS).unwrap();
    let knowledge = knowledge_file(dir);
    let base = emulator.base_url();
    let root = base.trim_end_matches("/v1").to_owned();
    TestServer::start_with(move |c| {
        c.openai_base_url = Some(base);
        c.openai_api_key = Some("sk-test-serving".into());
        c.anthropic_base_url = Some(root);
        c.anthropic_api_key = Some("sk-ant-test-serving".into());
        c.tiers = Some(tiers);
        c.knowledge = vec![knowledge];
        c.poll_interval_seconds = Some(0.05);
    })
    .await
}

fn ask(tier: &str, prompt: &str, user: &str) -> pb::CompleteRequest {
    pb::CompleteRequest {
        tier: tier.into(),
        user_id: user.into(),
        ..common::ask(prompt)
    }
}

async fn stream_all(server: &TestServer, req: pb::CompleteRequest) -> (String, pb::Completion) {
    let mut stream = server
        .client()
        .stream_complete(pb::StreamCompleteRequest { request: Some(req) })
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    while let Some(item) = stream.next().await {
        match item.unwrap().item.unwrap() {
            Item::Delta(d) => text.push_str(&d),
            Item::Completion(c) => return (text, c),
        }
    }
    panic!("the stream ended without a completion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_providers_answer_unary_and_streamed() {
    let emulator = common::emulator(1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server_for(&emulator, dir.path()).await;

    let pro = server
        .client()
        .complete(ask("pro", "Build me a landing page with dark theme", ""))
        .await
        .unwrap();
    let pro = pro.into_inner().completion.unwrap();
    assert_eq!(
        (pro.tier.as_str(), pro.provider.as_str()),
        ("pro", "anthropic")
    );
    assert!(pro.model.starts_with("claude-sonnet-5-5"), "{}", pro.model);
    assert!(pro.text.contains("landing page"), "{}", pro.text);
    common::prices::assert_cost(&pro, "claude-sonnet-5-5", false);
    let usage = pro.usage.unwrap();
    assert!(usage.knowledge_tokens > 1000, "{usage:?}");
    assert!(usage.prompt_tokens > usage.knowledge_tokens);
    assert_eq!(pro.finish_reason, pb::FinishReason::Stop as i32);

    let (text, done) = stream_all(
        &server,
        ask("pro", "Build me a landing page with dark theme", ""),
    )
    .await;
    assert_eq!(text, done.text);
    assert_eq!(text, pro.text, "streamed and unary answers agree");
    common::prices::assert_cost(&done, "claude-sonnet-5-5", false);

    let mini = server
        .client()
        .complete(ask("mini", "Explain useEffect", ""))
        .await
        .unwrap()
        .into_inner()
        .completion
        .unwrap();
    assert_eq!(mini.provider, "openai");
    assert!(mini.model.starts_with("gpt-4o-mini"));
    common::prices::assert_cost(&mini, "gpt-4o-mini", false);
    assert_eq!(
        mini.usage.unwrap().knowledge_tokens,
        0,
        "no injection on this tier"
    );
    let (text, done) = stream_all(&server, ask("mini", "Explain useEffect", "")).await;
    assert_eq!(text, done.text);
    assert!(!text.is_empty());
    common::prices::assert_cost(&done, "gpt-4o-mini", false);

    // An explicit model bypasses tiers.
    let direct = pb::CompleteRequest {
        tier: String::new(),
        model: "gpt-4o-mini".into(),
        ..ask("", "hi", "")
    };
    let direct = server
        .client()
        .complete(direct)
        .await
        .unwrap()
        .into_inner()
        .completion
        .unwrap();
    assert!(direct.tier.starts_with("model:"));
    common::prices::assert_cost(&direct, "gpt-4o-mini", false);
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_knowledge_block_is_cached_on_the_anthropic_tier() {
    let emulator = common::emulator(1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server_for(&emulator, dir.path()).await;
    let first = server
        .client()
        .complete(ask("pro", "first question", ""))
        .await
        .unwrap()
        .into_inner()
        .completion
        .unwrap();
    let second = server
        .client()
        .complete(ask("pro", "second question", ""))
        .await
        .unwrap()
        .into_inner()
        .completion
        .unwrap();
    common::prices::assert_cost(&first, "claude-sonnet-5-5", false);
    common::prices::assert_cost(&second, "claude-sonnet-5-5", false);
    let (u1, u2) = (first.usage.unwrap(), second.usage.unwrap());
    assert_eq!(u1.cached_tokens, 0, "the first request writes the cache");
    assert!(
        u1.cache_write_tokens >= u1.knowledge_tokens / 2,
        "the first request writes the knowledge block to the cache: {u1:?}"
    );
    assert!(
        u2.cached_tokens >= u2.knowledge_tokens / 2,
        "the second reads it: {u2:?}"
    );
    assert!(
        second.cost_usd < first.cost_usd,
        "cache reads are cheaper: {} vs {}",
        second.cost_usd,
        first.cost_usd
    );
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_switches_fast_to_the_newly_trained_model() {
    let emulator = common::emulator(1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server_for(&emulator, dir.path()).await;

    // Before any model: `strict` says so; `fast` answers from its fallback and says that.
    let err = server
        .client()
        .complete(ask("strict", "hi", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("no model yet") && err.message().contains("finetune promote"),
        "{}",
        err.message()
    );
    let fell_back = server
        .client()
        .complete(ask("fast", "hi", ""))
        .await
        .unwrap()
        .into_inner()
        .completion
        .unwrap();
    assert!(fell_back.fallback);
    assert_eq!(fell_back.tier, "pro");
    assert!(
        fell_back.fallback_reason.contains("no model yet"),
        "{}",
        fell_back.fallback_reason
    );

    let job = server
        .start_job(
            common::StartTraining::new("promote-me")
                .file_name("")
                .model("gpt-4o-mini")
                .suffix("fe")
                .build(),
        )
        .await;
    // Promoting an unfinished job is refused.
    let early = server
        .client()
        .promote_model(pb::PromoteModelRequest {
            tier: "fast".into(),
            source: Some(pb::promote_model_request::Source::JobId(job.id.clone())),
        })
        .await;
    if let Err(e) = early {
        assert_eq!(e.code(), Code::FailedPrecondition);
    }
    server
        .watch_to_end(&job.id, 0, Duration::from_secs(30))
        .await;
    let promoted = server
        .client()
        .promote_model(pb::PromoteModelRequest {
            tier: "fast".into(),
            source: Some(pb::promote_model_request::Source::JobId(job.id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    let tier = promoted.tier.unwrap();
    assert!(
        tier.model.starts_with("ft:gpt-4o-mini-2024-07-18:"),
        "{}",
        tier.model
    );
    assert_eq!(tier.promoted_from_job, job.id);

    let answer = server
        .client()
        .complete(ask("fast", "Make the cards bigger", ""))
        .await
        .unwrap()
        .into_inner()
        .completion
        .unwrap();
    assert_eq!(
        answer.model, tier.model,
        "fast serves the new model without a restart"
    );
    assert!(!answer.fallback);
    // A fine-tuned model bills at its own (higher) price, not the base model's.
    common::prices::assert_cost(&answer, "gpt-4o-mini-2024-07-18", true);
    let listed = server
        .client()
        .list_tiers(pb::ListTiersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .tiers
            .iter()
            .find(|t| t.name == "fast")
            .unwrap()
            .model,
        tier.model
    );
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_fast_model_falls_back_and_says_so() {
    let emulator = common::emulator(1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server_for(&emulator, dir.path()).await;
    server
        .client()
        .promote_model(pb::PromoteModelRequest {
            tier: "fast".into(),
            source: Some(pb::promote_model_request::Source::Model(
                "ft:gpt-4o-mini-2024-07-18:acme:gone:abc12345".into(),
            )),
        })
        .await
        .unwrap();
    let c = server
        .client()
        .complete(ask("fast", "hi", ""))
        .await
        .unwrap()
        .into_inner()
        .completion
        .unwrap();
    assert!(c.fallback, "{c:?}");
    assert_eq!(c.tier, "pro");
    assert!(
        c.fallback_reason.contains("not available"),
        "{}",
        c.fallback_reason
    );
    let (_, streamed) = stream_all(&server, ask("fast", "hi", "")).await;
    assert!(streamed.fallback);
    // Without a fallback the 404 is the caller's answer.
    server
        .client()
        .promote_model(pb::PromoteModelRequest {
            tier: "strict".into(),
            source: Some(pb::promote_model_request::Source::Model(
                "ft:gpt-4o-mini-2024-07-18:acme:gone:abc12345".into(),
            )),
        })
        .await
        .unwrap();
    let err = server
        .client()
        .complete(ask("strict", "hi", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_is_sticky_names_the_arm_and_is_measured() {
    let emulator = common::emulator(1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server_for(&emulator, dir.path()).await;
    let mut arms = std::collections::HashMap::new();
    for u in 0..60 {
        let user = format!("user-{u}");
        let first = server
            .client()
            .complete(ask("auto", "hi", &user))
            .await
            .unwrap()
            .into_inner()
            .completion
            .unwrap();
        let again = server
            .client()
            .complete(ask("auto", "hello again", &user))
            .await
            .unwrap()
            .into_inner()
            .completion
            .unwrap();
        assert_eq!(first.arm, again.arm, "user {user} stays on one arm");
        assert_eq!(first.arm, first.tier);
        *arms.entry(first.arm.clone()).or_insert(0) += 1;
        if u % 10 == 0 {
            server
                .client()
                .record_feedback(pb::RecordFeedbackRequest {
                    response_id: first.response_id.clone(),
                    rating: pb::Rating::Up as i32,
                })
                .await
                .unwrap();
        }
    }
    assert_eq!(arms.len(), 2, "{arms:?}");
    let stats = server
        .client()
        .get_tier_stats(pb::GetTierStatsRequest {
            tier: "auto".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    let rows: Vec<(&str, u64)> = stats
        .iter()
        .map(|s| (s.tier.as_str(), s.requests))
        .collect();
    assert_eq!(stats.len(), 2, "{rows:?}");
    assert_eq!(stats.iter().map(|s| s.requests).sum::<u64>(), 120);
    assert!(
        stats.iter().all(|s| s.split == "auto"
            && s.errors == 0
            && s.latency.as_ref().unwrap().p99_ms > 0.0)
    );
    assert_eq!(stats.iter().map(|s| s.thumbs_up).sum::<u64>(), 6);
    let pro = stats.iter().find(|s| s.tier == "pro").unwrap();
    let mini = stats.iter().find(|s| s.tier == "mini").unwrap();
    assert!(
        pro.cost_per_request_usd > mini.cost_per_request_usd,
        "the injected tier costs more per request"
    );
    assert!(pro.knowledge_tokens > 0 && mini.knowledge_tokens == 0);
    // The first pro request wrote the knowledge to the cache, later ones read it; the stats
    // carry both and the catalog price they were billed at.
    assert!(
        pro.cache_write_tokens > 0 && pro.cached_tokens > 0,
        "{pro:?}"
    );
    let price = pro
        .price
        .as_ref()
        .expect("the catalog prices claude-sonnet-5-5");
    let listed = common::prices::price("claude-sonnet-5-5", false);
    assert_eq!(
        (
            price.model.as_str(),
            price.cache_write_usd_per_1m,
            price.cached_input_usd_per_1m
        ),
        ("claude-sonnet-5-5", listed.cache_write, listed.cached_input)
    );
    assert_eq!(mini.cache_write_tokens, 0);

    let err = server
        .client()
        .record_feedback(pb::RecordFeedbackRequest {
            response_id: "resp-nope".into(),
            rating: pb::Rating::Down as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_stream_cancels_the_upstream_request() {
    // Slow tokens: 20 ms apart, so the answer is still streaming when the client leaves.
    let emulator = common::emulator(1.0).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server_for(&emulator, dir.path()).await;
    let long = "Write a long answer about ".repeat(30);
    let mut stream = server
        .client()
        .stream_complete(pb::StreamCompleteRequest {
            request: Some(ask("mini", &long, "")),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first.item, Some(Item::Delta(_))));
    drop(stream);
    let mut abandoned = 0;
    for _ in 0..100 {
        abandoned = emulator.stats().abandoned_streams;
        if abandoned > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        abandoned, 1,
        "the upstream stream was dropped when the client left"
    );
    let mut errors = 0;
    for _ in 0..100 {
        let request = pb::GetTierStatsRequest {
            tier: "mini".into(),
        };
        let stats = server
            .client()
            .get_tier_stats(request)
            .await
            .unwrap()
            .into_inner()
            .stats;
        errors = stats.first().map_or(0, |s| s.errors);
        if errors > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(errors, 1, "recorded as a cancelled request");
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field() {
    let emulator = common::emulator(1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server_for(&emulator, dir.path()).await;
    let mut no_user = ask("pro", "x", "");
    no_user.messages[0].role = pb::ChatRole::System as i32;
    let err = server.client().complete(no_user).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "messages"
    );
    let err = server
        .client()
        .complete(ask("nope", "x", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut hot = ask("pro", "x", "");
    hot.temperature = Some(3.0);
    assert_eq!(
        server.client().complete(hot).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let err = server
        .client()
        .promote_model(pb::PromoteModelRequest {
            tier: "auto".into(),
            source: Some(pb::promote_model_request::Source::Model("x".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_tests_promotes_and_reports_costs() {
    let emulator = common::emulator(1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let server = server_for(&emulator, dir.path()).await;
    let addr = server.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let test = common::finetune(
            Some(&addr),
            &[
                "test",
                "Build me a landing page with dark theme",
                "--tier",
                "pro",
                "--json",
            ],
        );
        let human = common::finetune(
            Some(&addr),
            &[
                "test",
                "Build me a landing page with dark theme",
                "--tier",
                "mini",
            ],
        );
        let promote = common::finetune(
            Some(&addr),
            &["promote", "--model", "gpt-4o-mini", "--tier", "strict"],
        );
        let cost = common::finetune(Some(&addr), &["cost", "--json"]);
        let tiers = common::finetune(Some(&addr), &["tiers"]);
        (test, human, promote, cost, tiers)
    })
    .await
    .unwrap();
    let (test, human, promote, cost, tiers) = out;
    assert_eq!(
        test.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&test.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&test.stdout).unwrap();
    assert_eq!(summary["tier"], "pro");
    assert!(summary["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(summary["knowledge_tokens"].as_u64().unwrap() > 1000);
    assert!(
        String::from_utf8_lossy(&test.stderr).contains("landing page"),
        "the answer streams to stderr with --json"
    );

    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("landing page")
            && human.contains("model:   gpt-4o-mini")
            && human.contains("cost:    $"),
        "{human}"
    );
    assert!(
        String::from_utf8_lossy(&promote.stdout).contains("tier strict now serves gpt-4o-mini")
    );
    let cost: serde_json::Value = serde_json::from_slice(&cost.stdout).unwrap();
    assert_eq!(cost["dearest"], "pro");
    assert_eq!(cost["cheapest"], "mini");
    assert!(cost["saving_per_request_usd"].as_f64().unwrap() > 0.0);
    assert!(String::from_utf8_lossy(&tiers.stdout).contains("auto     split: pro 50 / mini 50"));
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_promotion_serves_a_job_model_as_soon_as_it_succeeds() {
    let emulator = common::emulator(1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let tiers = dir.path().join("auto-tiers.toml");
    std::fs::write(
        &tiers,
        "auto_promote = \"fast\"\n\n[[tier]]\nname = \"fast\"\nprovider = \"openai\"\n",
    )
    .unwrap();
    let base = emulator.base_url();
    let server = TestServer::start_with(move |c| {
        c.openai_base_url = Some(base);
        c.openai_api_key = Some("sk-test-serving".into());
        c.tiers = Some(tiers);
        c.poll_interval_seconds = Some(0.05);
    })
    .await;
    let job = server
        .start_job(
            common::StartTraining::new("auto")
                .file_name("")
                .model("gpt-4o-mini")
                .build(),
        )
        .await;
    server
        .watch_to_end(&job.id, 0, Duration::from_secs(30))
        .await;
    let mut fast = String::new();
    for _ in 0..100 {
        let tiers = server
            .client()
            .list_tiers(pb::ListTiersRequest {})
            .await
            .unwrap()
            .into_inner()
            .tiers;
        fast = tiers[0].model.clone();
        if !fast.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fast.starts_with("ft:gpt-4o-mini-2024-07-18:"), "{fast:?}");
    let answer = server
        .client()
        .complete(ask("fast", "hi", ""))
        .await
        .unwrap()
        .into_inner()
        .completion
        .unwrap();
    assert_eq!(answer.model, fast);
    server.stop().await;
    emulator.shutdown().await;
}
