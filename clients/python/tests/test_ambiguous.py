"""Ambiguous creates through the SDK: OpenAI's answer to a create or upload is lost or
unreadable, the caller's deadline passes or its connection is cut mid-creation, or several
callers race with one request id. Each case must end with exactly one job at the emulated
OpenAI for the request id, tracked by the service, whose poller takes it to SUCCEEDED.

The tests do only what the README tells a caller to do: use the client as it is (it retries
UNAVAILABLE with the same request id), and after an error it raised (such as
DEADLINE_EXCEEDED) call again with the same request id."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from fileengine.finetune import (
    AsyncFineTuneClient,
    FineTuneClient,
    FineTuneError,
    Job,
    JobState,
    RetryPolicy,
)

from harness import Harness

CREATE_JOB = "POST /v1/fine_tuning/jobs"
LIST_JOBS = "GET /v1/fine_tuning/jobs"
UPLOAD = "POST /v1/files"
# What a call whose deadline passed ends with: the client's own timer, or the server's
# (tonic answers CANCELLED "Timeout expired" when its grpc-timeout fires first).
PAST_DEADLINE = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


@pytest.fixture(autouse=True)
def no_faults_left(harness: Harness) -> Iterator[None]:
    """Faults one test injected and did not use never reach the next test."""
    yield
    harness.clear_faults()


def new_request_id() -> str:
    return f"ambiguous-{uuid.uuid4()}"


def assert_one_tracked_job(client: FineTuneClient, harness: Harness, job: Job) -> None:
    """The emulated OpenAI holds exactly this job for its request id, and the service's
    poller takes it to SUCCEEDED."""
    assert job.upstream_id, job
    assert harness.upstream_jobs(job.request_id) == [job.upstream_id]
    watch = client.watch_job(job.id)
    for _ in watch:
        pass
    assert watch.job is not None and watch.job.state == JobState.SUCCEEDED
    assert client.get_job(job.id).upstream_id == job.upstream_id


@pytest.mark.parametrize("kind", ["malformed_json", "lost_response"])
def test_a_malformed_or_cut_create_response_makes_one_tracked_job(
    client: FineTuneClient, harness: Harness, kind: str
) -> None:
    # The job is made at OpenAI; its answer is cut in half, or never arrives.
    harness.inject(CREATE_JOB, kind)
    request_id = new_request_id()
    job = client.start_training(harness.sample_dataset, request_id=request_id).job
    assert job.request_id == request_id
    assert_one_tracked_job(client, harness, job)


def test_an_unconfirmed_create_is_unavailable_with_retry_info_and_retried(
    client: FineTuneClient, harness: Harness
) -> None:
    # The job is made but its answer is unreadable, and OpenAI's job list fails from then on
    # (the look-up before the create passes) for every look-up the server makes: 2 more
    # creation attempts and the final settle, each a list call tried 3 times.
    harness.inject(LIST_JOBS, "latency", ms=0)
    harness.inject(LIST_JOBS, "unavailable", times=9)
    harness.inject(CREATE_JOB, "malformed_json")
    request_id = new_request_id()
    # A client that does not retry sees what the SDK retries on.
    with (
        FineTuneClient(harness.address, timeout=60, retry=RetryPolicy(attempts=1)) as impatient,
        pytest.raises(FineTuneError) as raised,
    ):
        impatient.start_training(harness.sample_dataset, request_id=request_id)
    error = raised.value
    assert error.code == grpc.StatusCode.UNAVAILABLE, error
    assert error.reason == "UPSTREAM_OUTCOME_UNKNOWN", error
    assert error.retry_delay is not None and error.retry_delay > timedelta(0)
    # Called again with the same request id (the default client), the reservation the
    # unconfirmed create kept is settled by the look-up: the one job, not a second.
    job = client.start_training(harness.sample_dataset, request_id=request_id).job
    assert_one_tracked_job(client, harness, job)


def test_the_retry_waits_as_the_server_asks_within_the_policy() -> None:
    policy = RetryPolicy(initial_backoff=0.2, max_backoff=5.0, jitter=0.2)
    assert policy.backoff(1) == 0.2
    assert 0.16 <= policy.delay(1, None) <= 0.2  # less up to 20% of jitter
    assert policy.backoff(6) == policy.backoff(60) == 5.0
    assert policy.delay(1, 2.0) == 2.0  # RetryInfo, as UPSTREAM_OUTCOME_UNKNOWN sends
    assert policy.delay(3, 60.0) == 5.0  # never past the policy's longest wait


def test_a_lost_upload_response_makes_one_tracked_job(
    client: FineTuneClient, harness: Harness, tmp_path: Path
) -> None:
    # A dataset of its own, so that the upload happens (the sample is already on OpenAI).
    before = harness.requests_to(UPLOAD)
    dataset = own_dataset(harness, tmp_path)
    harness.inject(UPLOAD, "lost_response")
    job = client.start_training(dataset, request_id=new_request_id()).job
    assert harness.requests_to(UPLOAD) == before + 1, "found, not uploaded again"
    assert_one_tracked_job(client, harness, job)


def test_a_deadline_passing_mid_create_then_the_same_request_id_gets_the_job(
    client: FineTuneClient, harness: Harness
) -> None:
    harness.inject(CREATE_JOB, "latency", ms=3000)
    request_id = new_request_id()
    with (
        FineTuneClient(harness.address, timeout=1) as hurried,
        pytest.raises(FineTuneError) as raised,
    ):
        hurried.start_training(harness.sample_dataset, request_id=request_id)
    assert raised.value.code in PAST_DEADLINE, raised.value
    # As the README says: call again with the same request id.
    job = client.start_training(harness.sample_dataset, request_id=request_id).job
    assert_one_tracked_job(client, harness, job)


def test_a_generated_request_id_comes_with_the_error_and_gets_the_one_job(
    client: FineTuneClient, harness: Harness
) -> None:
    # As above, but the caller gave no request id: the error hands back the one generated.
    harness.inject(CREATE_JOB, "latency", ms=3000)
    with (
        FineTuneClient(harness.address, timeout=1) as hurried,
        pytest.raises(FineTuneError) as raised,
    ):
        hurried.start_training(harness.sample_dataset)
    error = raised.value
    assert error.code in PAST_DEADLINE, error
    assert uuid.UUID(error.request_id).version == 4
    # The failed call's create reached OpenAI: the retry must find that job, not make one.
    job = client.start_training(harness.sample_dataset, request_id=error.request_id).job
    assert job.request_id == error.request_id
    assert_one_tracked_job(client, harness, job)


def test_a_connection_cut_mid_upload_is_retried_into_the_one_job(
    client: FineTuneClient, harness: Harness, tmp_path: Path
) -> None:
    dataset = own_dataset(harness, tmp_path)
    before = harness.requests_to(UPLOAD)
    harness.inject(UPLOAD, "latency", ms=2000)
    request_id = new_request_id()
    result: dict[str, Job | BaseException] = {}

    def call() -> None:
        try:
            with FineTuneClient(harness.address, timeout=60) as own:
                result["job"] = own.start_training(dataset, request_id=request_id).job
        except BaseException as error:  # reported by the assertion below
            result["error"] = error

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 30
    while harness.requests_to(UPLOAD) == before:  # the upload has reached OpenAI
        assert time.monotonic() < deadline, "the upload never reached the emulator"
        time.sleep(0.02)
    assert harness.cut() >= 1
    caller.join(timeout=60)
    assert "error" not in result, result
    job = result["job"]
    assert isinstance(job, Job)
    assert harness.requests_to(UPLOAD) == before + 1
    assert_one_tracked_job(client, harness, job)


def test_concurrent_calls_with_one_request_id_on_several_connections(
    client: FineTuneClient, harness: Harness
) -> None:
    harness.inject(CREATE_JOB, "latency", ms=1000)
    request_id = new_request_id()
    jobs: list[Job] = []
    errors: list[BaseException] = []

    def call() -> None:
        # A local subchannel pool: each client its own connection.
        options = [("grpc.use_local_subchannel_pool", 1)]
        try:
            with FineTuneClient(harness.address, timeout=60, options=options) as own:
                jobs.append(own.start_training(harness.sample_dataset, request_id=request_id).job)
        except BaseException as error:
            errors.append(error)

    callers = [threading.Thread(target=call) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=60)
    assert errors == []
    assert len(jobs) == 4
    assert len({(j.id, j.upstream_id) for j in jobs}) == 1, jobs
    assert_one_tracked_job(client, harness, jobs[0])


def test_asyncio_client_malformed_create_deadline_and_concurrent_calls(
    client: FineTuneClient, harness: Harness
) -> None:
    async def scenario() -> list[Job]:
        done: list[Job] = []
        async with AsyncFineTuneClient(harness.address, timeout=60) as aio:
            # (a) a malformed create answer.
            harness.inject(CREATE_JOB, "malformed_json")
            done.append(
                (await aio.start_training(harness.sample_dataset, request_id=new_request_id())).job
            )
            # (c) the deadline passes mid-create; the same request id again gets the job.
            harness.inject(CREATE_JOB, "latency", ms=3000)
            request_id = new_request_id()
            async with AsyncFineTuneClient(harness.address, timeout=1) as hurried:
                with pytest.raises(FineTuneError) as raised:
                    await hurried.start_training(harness.sample_dataset, request_id=request_id)
            assert raised.value.code in PAST_DEADLINE, raised.value
            assert raised.value.request_id == ""  # the caller has its own id
            done.append(
                (await aio.start_training(harness.sample_dataset, request_id=request_id)).job
            )
            # (e) concurrent calls with one request id, each on its own connection.
            harness.inject(CREATE_JOB, "latency", ms=1000)
            request_id = new_request_id()
            clients = [
                AsyncFineTuneClient(
                    harness.address, timeout=60, options=[("grpc.use_local_subchannel_pool", 1)]
                )
                for _ in range(4)
            ]
            try:
                racing = await asyncio.gather(
                    *(
                        c.start_training(harness.sample_dataset, request_id=request_id)
                        for c in clients
                    )
                )
            finally:
                for c in clients:
                    await c.close()
            assert len({(r.job.id, r.job.upstream_id) for r in racing}) == 1, racing
            done.append(racing[0].job)
        return done

    for job in asyncio.run(scenario()):
        assert_one_tracked_job(client, harness, job)


def own_dataset(harness: Harness, tmp_path: Path) -> Path:
    """The sample dataset with its first user message made unique: content OpenAI does not
    have yet, so that StartTraining uploads it."""
    first, rest = harness.sample_dataset.read_text().split("\n", 1)
    example = json.loads(first)
    user = next(m for m in example["messages"] if m["role"] == "user")
    marker = uuid.uuid4().hex
    user["content"] += f" ({marker})"
    path = tmp_path / f"own-{marker}.jsonl"
    path.write_text(json.dumps(example) + "\n" + rest)
    return path
