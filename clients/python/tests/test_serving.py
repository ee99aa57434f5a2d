"""Serving: promote the trained model to the `fast` tier, then complete and stream from it."""

from __future__ import annotations

import grpc
import pytest

from fileengine.finetune import ChatMessage, ChatRole, FineTuneClient, FineTuneError, Job, Rating

from prices import assert_cost

PROMPT = "Build me a landing page with dark theme"


def test_promote_then_complete_and_stream(client: FineTuneClient, succeeded_job: Job) -> None:
    # Nothing is promoted in this session before this test: the fast tier has no model yet.
    with pytest.raises(FineTuneError) as raised:
        client.complete(PROMPT, tier="fast")
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.reason == "TIER_HAS_NO_MODEL"

    promoted = client.promote_model("fast", job_id=succeeded_job.id)
    assert promoted.tier.model == succeeded_job.fine_tuned_model
    assert promoted.tier.promoted_from_job == succeeded_job.id
    fast = next(t for t in client.list_tiers() if t.name == "fast")
    assert fast.model == succeeded_job.fine_tuned_model

    completion = client.complete(PROMPT, tier="fast", system="You write HTML.")
    assert completion.tier == "fast"
    assert completion.model == succeeded_job.fine_tuned_model
    assert completion.text
    # The job trained the default base model; its fine-tuned model bills at its own price.
    assert_cost(completion, "gpt-4o-2024-08-06", fine_tuned=True)

    stream = client.stream_complete([ChatMessage(role=ChatRole.USER, content=PROMPT)], tier="fast")
    deltas = list(stream)
    assert len(deltas) > 1
    assert stream.completion is not None
    assert stream.completion.text == "".join(deltas)
    assert stream.completion.model == succeeded_job.fine_tuned_model
    assert_cost(stream.completion, "gpt-4o-2024-08-06", fine_tuned=True)

    feedback = client.record_feedback(completion.response_id, Rating.UP)
    assert feedback.tier == "fast"
    stats = client.get_tier_stats("fast")
    assert sum(s.requests for s in stats) >= 2
    assert sum(s.thumbs_up for s in stats) == 1


def test_complete_from_the_pro_tier(client: FineTuneClient) -> None:
    completion = client.complete(PROMPT, tier="pro", max_output_tokens=512)
    assert completion.tier == "pro"
    assert completion.provider == "anthropic"
    assert completion.text
    assert_cost(completion, "claude-sonnet-5-5")
