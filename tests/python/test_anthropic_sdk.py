"""The emulator's Messages API driven by Anthropic's official Python SDK, an independent
client of it.

Starts `finetune emulator` (FINETUNE_BIN, default target/debug/finetune) on a free port,
reads the URL from its one line of output, and points the SDK at the API root (the URL
without `/v1`, as ANTHROPIC_BASE_URL takes it). Checks create, stream with text_stream,
prompt-cache usage with cache_control, error exceptions, the SDK's retry of an injected
429, and an in-stream error event.
"""

import json
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import anthropic
import pytest
from anthropic import Anthropic

from conftest import admin, running_emulator

ROOT = Path(__file__).resolve().parents[2]
MODEL = "claude-sonnet-5-5"
QUESTION = [{"role": "user", "content": "What is File Engine?"}]


@pytest.fixture(scope="module")
def base_url():
    # Real time: the prompt cache lives five emulated minutes.
    with running_emulator(1) as root:
        yield root


@pytest.fixture()
def client(base_url):
    return Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0, timeout=30)


def messages_count(base_url):
    return admin(base_url, "/_emulator/stats")["by_route"].get("POST /v1/messages", 0)


def knowledge_base(lines):
    return "".join(
        f"Article {i}: a file in bucket {i * 7 % 13} is kept for {30 + i % 60} days, "
        f"replicated {1 + i % 3} times, and billed at tier {i % 5}.\n"
        for i in range(lines)
    )


def test_create_and_stream_agree(client):
    message = client.messages.create(model=MODEL, max_tokens=256, messages=QUESTION)
    assert message.model == MODEL
    assert message.id.startswith("msg_01")
    assert message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    text = message.content[0].text
    assert MODEL in text and text.endswith("You said: What is File Engine?")
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 0
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.service_tier == "standard"
    assert message._request_id.startswith("req_011C")

    with client.messages.stream(model=MODEL, max_tokens=256, messages=QUESTION) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text
    assert final.content[0].text == text
    assert final.model == MODEL
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == message.usage.output_tokens
    assert final.usage.input_tokens == message.usage.input_tokens


def test_an_alias_answers_with_its_dated_id(client):
    # The SDK warns that Sonnet 4.5 retires on 2026-11-30; the API still serves it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        message = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=16, messages=QUESTION
        )
    assert message.model == "claude-sonnet-4-5-20250929"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 16


def test_cache_control_writes_then_reads(client):
    kb = knowledge_base(400)
    system = [
        {"type": "text", "text": kb, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Answer briefly."},
    ]
    first = client.messages.create(model=MODEL, max_tokens=64, system=system, messages=QUESTION)
    written = first.usage.cache_creation_input_tokens
    assert written > 1024
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == written
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == 0

    with client.messages.stream(
        model=MODEL, max_tokens=64, system=system, messages=QUESTION
    ) as stream:
        second = stream.get_final_message()
    assert second.usage.cache_read_input_tokens == written
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == first.usage.input_tokens

    # Under the 1024-token minimum nothing is cached, and no error says so.
    short = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):
        small = client.messages.create(model=MODEL, max_tokens=16, system=short, messages=QUESTION)
        assert small.usage.cache_creation_input_tokens == 0
        assert small.usage.cache_read_input_tokens == 0


def test_errors_raise_the_sdk_exceptions(client):
    with pytest.raises(anthropic.NotFoundError) as not_found:
        client.messages.create(model="claude-sonnet-9", max_tokens=16, messages=QUESTION)
    assert not_found.value.status_code == 404
    assert not_found.value.body["error"] == {
        "type": "not_found_error",
        "message": "model: claude-sonnet-9",
    }
    assert not_found.value.request_id.startswith("req_011C")
    assert not_found.value.body["request_id"] == not_found.value.request_id

    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(
            # The 2.x SDK no longer takes temperature as an argument.
            model="claude-sonnet-5",
            max_tokens=16,
            messages=QUESTION,
            extra_body={"temperature": 0.5},
        )
    assert bad.value.body["error"]["message"] == "temperature is deprecated for this model"

    # The SDK will not send an empty key, so ask without one directly.
    keyless = urllib.request.Request(
        f"{str(client.base_url).rstrip('/')}/v1/messages",
        data=json.dumps({"model": MODEL, "max_tokens": 16, "messages": QUESTION}).encode(),
        headers={"content-type": "application/json", "anthropic-version": "2023-06-01"},
    )
    with pytest.raises(urllib.error.HTTPError) as unauthorized:
        urllib.request.urlopen(keyless, timeout=10)
    assert unauthorized.value.code == 401
    assert json.load(unauthorized.value)["error"]["type"] == "authentication_error"


def test_sdk_retries_an_injected_rate_limit(base_url, client):
    admin(base_url, "/_emulator/stats", method="DELETE")
    admin(
        base_url,
        "/_emulator/faults",
        {"route": "POST /v1/messages", "times": 1, "kind": "rate_limit", "retry_after_ms": 100},
    )
    retrying = Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=2, timeout=30)
    message = retrying.messages.create(model=MODEL, max_tokens=32, messages=QUESTION)
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert messages_count(base_url) == 2

    # Without retries the 429 surfaces with Anthropic's headers and envelope.
    admin(
        base_url,
        "/_emulator/faults",
        {"route": "POST /v1/messages", "times": 1, "kind": "rate_limit", "retry_after_ms": 100},
    )
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model=MODEL, max_tokens=32, messages=QUESTION)
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.response.headers["x-should-retry"] == "true"
    assert limited.value.body["error"]["type"] == "rate_limit_error"

    admin(base_url, "/_emulator/faults", {"route": "POST /v1/messages", "kind": "unavailable"})
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=MODEL, max_tokens=32, messages=QUESTION)


def test_an_error_event_mid_stream_raises(base_url, client):
    admin(base_url, "/_emulator/stats", method="DELETE")
    admin(
        base_url,
        "/_emulator/faults",
        {"route": "POST /v1/messages", "kind": "error_event", "after_chunks": 4},
    )
    retrying = Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=2, timeout=30)
    received = []
    with pytest.raises(anthropic.APIStatusError) as failed:
        with retrying.messages.stream(model=MODEL, max_tokens=64, messages=QUESTION) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert len(received) == 1
    assert failed.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    # An error after the 200 is not retried by the SDK.
    assert messages_count(base_url) == 1
