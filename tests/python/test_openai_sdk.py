"""The emulator driven by OpenAI's official Python SDK, an independent client of it.

Starts `finetune emulator` (FINETUNE_BIN, default target/debug/finetune) on a free port,
reads the URL from its one line of output, and checks that the SDK can upload, train,
watch, page, cancel, chat and stream against it, and that it retries an injected 429.
"""

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from conftest import admin as emulator_admin
from conftest import running_emulator

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ROOT / "reference" / "datasets"
SAMPLE = DATASETS / "openai-dotnet_fine_tuning_sample.jsonl"
TOY = DATASETS / "toy_chat_fine_tuning.jsonl"


@pytest.fixture(scope="module")
def base_url():
    with running_emulator(200) as root:
        yield root + "/v1"


@pytest.fixture()
def client(base_url):
    return OpenAI(base_url=base_url, api_key="sk-emulator", max_retries=0, timeout=30)


def admin(base_url, path, body=None, method=None):
    """Calls the emulator's /_emulator admin endpoints."""
    return emulator_admin(base_url.removesuffix("/v1"), path, body, method)


def wait_terminal(client, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job, seen
        assert time.monotonic() < deadline, f"{job_id} stuck in {job.status}"
        time.sleep(0.02)


def test_upload_train_watch_checkpoints_and_results(client):
    with SAMPLE.open("rb") as f:
        uploaded = client.files.create(file=f, purpose="fine-tune")
    assert uploaded.id.startswith("file-")
    assert uploaded.status == "processed"
    assert uploaded.bytes == SAMPLE.stat().st_size

    job = client.fine_tuning.jobs.create(
        model="gpt-3.5-turbo", training_file=uploaded.id, suffix="sdk", seed=7
    )
    assert job.status == "validating_files"
    assert job.model == "gpt-3.5-turbo-0125"
    assert job.hyperparameters.n_epochs == "auto"

    done, seen = wait_terminal(client, job.id)
    assert seen[0] == "validating_files" and seen[-1] == "succeeded", seen
    assert done.hyperparameters.n_epochs == 10
    assert done.hyperparameters.batch_size == 1
    # What OpenAI reported for this very file (gpt-3.5-turbo-0125, 10 epochs) in the recorded
    # openai-dotnet GetCheckpoints.json; our pre-flight estimate says 6,030.
    assert done.trained_tokens == 5830
    assert re.fullmatch(r"ft:gpt-3\.5-turbo-0125:[^:]+:sdk:[A-Za-z0-9]{8}", done.fine_tuned_model)

    events = client.fine_tuning.jobs.list_events(job.id, limit=1000)
    assert not events.has_more
    messages = [e.message for e in events.data if e.type == "message"]
    assert messages[0] == "The job has successfully completed"
    assert messages[-1] == f"Created fine-tuning job: {job.id}"
    assert sum(1 for e in events.data if e.type == "metrics") == 100
    # The SDK's auto-pagination (after = last id) walks the same events, newest first.
    paged = [e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=7)]
    assert paged == [e.id for e in events.data]

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in checkpoints.data] == [100, 90, 80]
    assert checkpoints.data[0].fine_tuned_model_checkpoint == done.fine_tuned_model
    assert checkpoints.data[1].fine_tuned_model_checkpoint.endswith(":ckpt-step-90")

    [results] = done.result_files
    csv = client.files.content(results).text
    assert csv.splitlines()[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert len(csv.splitlines()) == 101

    listed = [j.id for j in client.fine_tuning.jobs.list(limit=100)]
    assert job.id in listed

    answer = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "Who are you?"}]
    )
    assert answer.model == done.fine_tuned_model
    assert "Who are you?" in answer.choices[0].message.content


def test_too_few_examples_fail(client):
    with TOY.open("rb") as f:
        uploaded = client.files.create(file=f, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=uploaded.id)
    failed, _ = wait_terminal(client, job.id)
    assert failed.status == "failed"
    assert failed.error.code == "invalid_n_examples"
    assert failed.error.param == "training_file"
    assert failed.error.message == (
        "Training file has 5 example(s), but must have at least 10 examples"
    )


def test_cancel_and_errors(client):
    with SAMPLE.open("rb") as f:
        uploaded = client.files.create(file=f, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini",
        training_file=uploaded.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50}}},
        metadata={"suite": "python"},
    )
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)
    filtered = client.fine_tuning.jobs.list(metadata={"suite": "python"})
    assert [j.id for j in filtered.data] == [job.id]

    with pytest.raises(openai.BadRequestError) as bad_model:
        client.fine_tuning.jobs.create(model="gpt-nonexistent", training_file=uploaded.id)
    assert bad_model.value.code == "model_not_available"
    with pytest.raises(openai.BadRequestError) as bad_file:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-nope")
    assert bad_file.value.param == "training_file"
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("fake_id")
    with pytest.raises(openai.NotFoundError) as no_model:
        client.models.retrieve("fake_id")
    assert no_model.value.code == "model_not_found"
    # The SDK will not send an empty key, so ask without one directly.
    with pytest.raises(urllib.error.HTTPError) as unauthorized:
        urllib.request.urlopen(f"{str(client.base_url).rstrip('/')}/models", timeout=10)
    assert unauthorized.value.code == 401
    assert json.load(unauthorized.value)["error"]["type"] == "invalid_request_error"


def test_uploads_in_parts(client):
    data = SAMPLE.read_bytes()
    upload = client.uploads.create(
        bytes=len(data), filename="sample.jsonl", mime_type="text/jsonl", purpose="fine-tune"
    )
    assert upload.status == "pending"
    first = client.uploads.parts.create(upload.id, data=data[:2000])
    second = client.uploads.parts.create(upload.id, data=data[2000:])
    done = client.uploads.complete(upload.id, part_ids=[first.id, second.id])
    assert done.status == "completed"
    assert done.file.bytes == len(data)
    assert client.files.content(done.file.id).content == data
    assert client.files.delete(done.file.id).deleted


def test_chat_and_streamed_chat(client):
    messages = [{"role": "user", "content": "Hello, world!"}]
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert answer.model == "gpt-4o-mini-2024-07-18"
    assert answer.usage.prompt_tokens == 11
    assert answer.choices[0].finish_reason == "stop"

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens

    short = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, max_completion_tokens=2
    )
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 2


def test_sdk_retries_an_injected_rate_limit(base_url):
    admin(base_url, "/_emulator/stats", method="DELETE")
    admin(
        base_url,
        "/_emulator/faults",
        {"route": "GET /v1/models", "times": 1, "kind": "rate_limit", "retry_after_ms": 100},
    )
    retrying = OpenAI(base_url=base_url, api_key="sk-emulator", max_retries=2)
    models = retrying.models.list()
    assert any(m.id == "gpt-4o-mini" for m in models.data)
    assert admin(base_url, "/_emulator/stats")["by_route"]["GET /v1/models"] == 2
