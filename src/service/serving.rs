//! Conversions between the serving core and protobuf.

use crate::error::Error;
use crate::pb;
use crate::serving::tiers::ProviderKind;
use crate::serving::{CompleteRequest, Completion, TierStats, TierView, Turn};

pub(super) fn request(r: pb::CompleteRequest) -> Result<CompleteRequest, Error> {
    let turns = r
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| match pb::ChatRole::try_from(m.role) {
            Ok(pb::ChatRole::System | pb::ChatRole::Developer) => Ok(Turn::System(m.content)),
            Ok(pb::ChatRole::User) => Ok(Turn::User(m.content)),
            Ok(pb::ChatRole::Assistant) => Ok(Turn::Assistant(m.content)),
            _ => Err(Error::invalid(
                format!("messages[{i}].role"),
                "set a role (system, developer, user or assistant)",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CompleteRequest {
        turns,
        tier: r.tier,
        model: r.model,
        temperature: r.temperature,
        max_output_tokens: r.max_output_tokens,
        stop: r.stop,
        user_id: r.user_id,
    })
}

pub(super) fn completion(c: Completion) -> pb::Completion {
    let finish_reason = match c.finish_reason.as_str() {
        "stop" | "end_turn" | "stop_sequence" => pb::FinishReason::Stop,
        "length" | "max_tokens" => pb::FinishReason::Length,
        "content_filter" | "refusal" => pb::FinishReason::ContentFilter,
        _ => pb::FinishReason::Unspecified,
    };
    pb::Completion {
        response_id: c.response_id,
        text: c.text,
        model: c.model,
        tier: c.tier,
        arm: c.arm,
        finish_reason: finish_reason as i32,
        raw_finish_reason: c.finish_reason,
        usage: Some(pb::Usage {
            prompt_tokens: c.input_tokens,
            completion_tokens: c.output_tokens,
            cached_tokens: c.cached_tokens,
            knowledge_tokens: c.knowledge_tokens,
        }),
        cost_usd: c.cost_usd,
        provider: c.provider,
        fallback: c.fallback,
        fallback_reason: c.fallback_reason,
        latency_ms: c.latency_ms,
    }
}

pub(super) fn tier(t: TierView) -> pb::Tier {
    pb::Tier {
        name: t.spec.name.clone(),
        provider: match t.spec.provider {
            Some(ProviderKind::Openai) => pb::Provider::Openai,
            Some(ProviderKind::Anthropic) => pb::Provider::Anthropic,
            None => pb::Provider::Unspecified,
        } as i32,
        model: t.model,
        inject_knowledge: t.spec.inject_knowledge,
        knowledge_tokens: t.knowledge_tokens,
        fallback: t.spec.fallback.clone().unwrap_or_default(),
        arms: t
            .spec
            .split
            .iter()
            .map(|a| pb::Arm {
                tier: a.tier.clone(),
                weight: a.weight,
            })
            .collect(),
        max_output_tokens: t.spec.max_output_tokens,
        promoted_from_job: t.promoted_from_job.unwrap_or_default(),
    }
}

pub(super) fn stats(s: TierStats) -> pb::TierStats {
    let per_request = s.cost_per_request();
    pb::TierStats {
        tier: s.tier,
        split: s.split,
        model: s.model,
        requests: s.requests,
        errors: s.errors,
        latency: Some(pb::LatencyStats {
            p50_ms: s.p50_ms,
            p95_ms: s.p95_ms,
            p99_ms: s.p99_ms,
        }),
        input_tokens: s.input_tokens,
        output_tokens: s.output_tokens,
        cached_tokens: s.cached_tokens,
        knowledge_tokens: s.knowledge_tokens,
        cost_usd: s.cost_usd,
        cost_per_request_usd: per_request,
        thumbs_up: s.thumbs_up,
        thumbs_down: s.thumbs_down,
        fallbacks: s.fallbacks,
    }
}
