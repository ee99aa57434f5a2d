//! Conversions between the serving core and protobuf.

use crate::pb;
use finetune_core::error::Error;
use finetune_core::ports::chat::FinishReason;
use finetune_core::serving::tiers::ProviderKind;
use finetune_core::serving::{CompleteRequest, Completion, TierStats, TierView, Turn};

/// The serving request of `r`; `deadline` is the caller's (see [`deadline`]).
pub(super) fn request(
    r: pb::CompleteRequest,
    deadline: Option<tokio::time::Instant>,
) -> Result<CompleteRequest, Error> {
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
        deadline,
    })
}

/// The caller's deadline, from the `grpc-timeout` header gRPC clients send with one
/// (`<digits><unit>`, unit one of H M S m u n). Absent or malformed: none.
pub(super) fn deadline(metadata: &tonic::metadata::MetadataMap) -> Option<tokio::time::Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => std::time::Duration::from_secs(n.checked_mul(3600)?),
        "M" => std::time::Duration::from_secs(n.checked_mul(60)?),
        "S" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_millis(n),
        "u" => std::time::Duration::from_micros(n),
        "n" => std::time::Duration::from_nanos(n),
        _ => return None,
    };
    tokio::time::Instant::now().checked_add(timeout)
}

pub(super) fn completion(c: Completion) -> pb::Completion {
    let finish_reason = match c.finish_reason {
        FinishReason::Stop => pb::FinishReason::Stop,
        FinishReason::Length => pb::FinishReason::Length,
        FinishReason::ContentFilter => pb::FinishReason::ContentFilter,
        FinishReason::Other => pb::FinishReason::Unspecified,
    };
    pb::Completion {
        response_id: c.response_id,
        text: c.text,
        model: c.model,
        tier: c.tier,
        arm: c.arm,
        finish_reason: finish_reason as i32,
        raw_finish_reason: c.raw_finish_reason,
        usage: Some(pb::Usage {
            prompt_tokens: c.input_tokens,
            completion_tokens: c.output_tokens,
            cached_tokens: c.cached_tokens,
            knowledge_tokens: c.knowledge_tokens,
            cache_write_tokens: c.cache_write_tokens,
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
        cache_write_tokens: s.cache_write_tokens,
        knowledge_tokens: s.knowledge_tokens,
        cost_usd: s.cost_usd,
        cost_per_request_usd: per_request,
        thumbs_up: s.thumbs_up,
        thumbs_down: s.thumbs_down,
        fallbacks: s.fallbacks,
        price: s.price.map(|p| pb::InferencePrice {
            cached_input_usd_per_1m: p.token_prices().cached_input,
            cache_write_usd_per_1m: p.token_prices().cache_write,
            model: p.model,
            fine_tuned: p.fine_tuned,
            input_usd_per_1m: p.input,
            output_usd_per_1m: p.output,
            source: p.source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<std::time::Duration> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().unwrap());
        deadline(&metadata).map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    #[test]
    fn grpc_timeout_units() {
        let near = |got: Option<std::time::Duration>, want: u64| {
            let got = got.expect("a deadline").as_millis() as u64;
            assert!(got <= want && got + 50 >= want, "{got} ms, want {want} ms");
        };
        near(timeout_of("2S"), 2000);
        near(timeout_of("1500m"), 1500);
        near(timeout_of("1M"), 60_000);
        near(timeout_of("3000000u"), 3000);
        assert_eq!(timeout_of("5"), None);
        assert_eq!(timeout_of("S"), None);
        assert_eq!(timeout_of("123456789S"), None, "at most 8 digits");
        assert_eq!(timeout_of("5x"), None);
    }
}
