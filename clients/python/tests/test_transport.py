"""Client behaviour the real server cannot be made to show on demand: retries of StartTraining
on UNAVAILABLE that keep the idempotency key, a watch resumed after a stream that ended early
(not dropped), and RetryInfo decoding (what the server sends when OpenAI rate-limits it).

These tests talk to a small in-process stand-in built on the generated servicer; it only
records what the client sends. The service's behaviour, the bearer token and TLS are tested
against the real server in the other files (test_secure.py for tokens, roles and TLS).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from datetime import timedelta
from pathlib import Path

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from grpc_status import rpc_status

from fileengine.finetune import DOMAIN, FineTuneClient, FineTuneError, JobState, RetryPolicy
from fileengine.finetune.v1 import job_pb2, service_pb2_grpc

FAST_RETRY = RetryPolicy(attempts=3, initial_backoff=0.01)


class StandIn(service_pb2_grpc.FineTuneServiceServicer):
    """Implements three RPCs; the base class answers UNIMPLEMENTED for the rest (its typing
    marks them abstract, hence the `type: ignore[abstract]` where it is made)."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []
        self.watch_positions: list[int] = []
        self.unavailable_starts = 1
        self.job_events = 3
        self.send_events = True
        self.quiet_first_seconds = 0.0

    def StartTraining(
        self, request: job_pb2.StartTrainingRequest, context: grpc.ServicerContext
    ) -> job_pb2.StartTrainingResponse:
        self.request_ids.append(request.request_id)
        if len(self.request_ids) <= self.unavailable_starts:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return job_pb2.StartTrainingResponse(
            job=job_pb2.Job(id="job-1", request_id=request.request_id)
        )

    def GetJob(
        self, request: job_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> job_pb2.GetJobResponse:
        # What the server sends when OpenAI rate-limits it: ErrorInfo and RetryInfo.
        details = [any_pb2.Any(), any_pb2.Any()]
        details[0].Pack(
            error_details_pb2.ErrorInfo(
                reason="UPSTREAM_RATE_LIMITED", domain=DOMAIN, metadata={"provider": "openai"}
            )
        )
        details[1].Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2)))
        status = status_pb2.Status(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="slow down", details=details
        )
        context.abort_with_status(rpc_status.to_status(status))
        raise AssertionError("abort_with_status raises")

    def WatchJob(
        self, request: job_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[job_pb2.WatchJobResponse]:
        # Each stream sends one event then ends, as a server restarting between events
        # would; the last event (`job_events`) finishes the job. Without `send_events`, only
        # a heartbeat.
        self.watch_positions.append(request.after_sequence)
        running = job_pb2.Job(id=request.job_id, state=JobState.RUNNING)
        yield job_pb2.WatchJobResponse(snapshot=running)
        if len(self.watch_positions) == 1 and self.quiet_first_seconds:
            # A job with nothing to report for a while (queued upstream): heartbeats only,
            # then the stream drops.
            deadline = time.monotonic() + self.quiet_first_seconds
            while time.monotonic() < deadline:
                beat = job_pb2.Heartbeat(last_sequence=request.after_sequence)
                yield job_pb2.WatchJobResponse(heartbeat=beat)
                time.sleep(0.1)
            return
        if not self.send_events:
            beat = job_pb2.Heartbeat(last_sequence=request.after_sequence)
            yield job_pb2.WatchJobResponse(heartbeat=beat)
            return
        sequence = request.after_sequence + 1
        done = sequence == self.job_events
        event = job_pb2.JobEvent(
            job_id=request.job_id,
            sequence=sequence,
            kind=job_pb2.JOB_EVENT_KIND_STATE_CHANGED if done else job_pb2.JOB_EVENT_KIND_MESSAGE,
            job=job_pb2.Job(id=request.job_id, state=JobState.SUCCEEDED) if done else None,
        )
        yield job_pb2.WatchJobResponse(event=event)
        yield job_pb2.WatchJobResponse(heartbeat=job_pb2.Heartbeat(last_sequence=sequence))


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, int]]:
    servicer = StandIn()  # type: ignore[abstract]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_FineTuneServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(grace=None)


def test_start_training_retries_unavailable_with_the_same_request_id(
    stand_in: tuple[StandIn, int],
) -> None:
    servicer, port = stand_in
    servicer.unavailable_starts = 2
    with FineTuneClient(f"127.0.0.1:{port}", retry=FAST_RETRY) as client:
        job = client.start_training(Path(__file__)).job
    assert len(servicer.request_ids) == 3
    assert len(set(servicer.request_ids)) == 1
    assert job.request_id == servicer.request_ids[0]

    servicer.request_ids.clear()
    servicer.unavailable_starts = 10
    with (
        FineTuneClient(f"127.0.0.1:{port}", retry=FAST_RETRY) as client,
        pytest.raises(FineTuneError) as raised,
    ):
        client.start_training(Path(__file__))
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(servicer.request_ids) == FAST_RETRY.attempts


def test_start_training_gives_up_at_its_budget_or_the_callers_deadline(
    stand_in: tuple[StandIn, int],
) -> None:
    servicer, port = stand_in
    servicer.unavailable_starts = 1000
    # Waits of 0.1 s with no count limit: the budget (0.5 s from the first failure) ends it.
    budget = RetryPolicy(initial_backoff=0.1, multiplier=1, jitter=0, start_budget=0.5)
    with (
        FineTuneClient(f"127.0.0.1:{port}", retry=budget) as client,
        pytest.raises(FineTuneError) as raised,
    ):
        client.start_training(Path(__file__))
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert 2 <= len(servicer.request_ids) <= 7  # at 0, 0.1, ... 0.5 s
    assert uuid.UUID(raised.value.request_id).version == 4

    # The caller's timeout bounds the start as a whole, retries included.
    servicer.request_ids.clear()
    patient = RetryPolicy(initial_backoff=0.1, multiplier=1, jitter=0, start_budget=600)
    with (
        FineTuneClient(f"127.0.0.1:{port}", retry=patient, timeout=0.5) as client,
        pytest.raises(FineTuneError) as raised,
    ):
        client.start_training(Path(__file__))
    assert raised.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert 2 <= len(servicer.request_ids) <= 6


def test_a_watch_stream_that_ends_early_is_resumed(stand_in: tuple[StandIn, int]) -> None:
    servicer, port = stand_in
    with FineTuneClient(f"127.0.0.1:{port}", retry=FAST_RETRY) as client:
        watch = client.watch_job("job-1", heartbeats=True)
        items = list(watch)
    assert servicer.watch_positions == [0, 1, 2]
    assert watch.resumes == 2
    events = [i for i in items if isinstance(i, job_pb2.JobEvent)]
    assert [e.sequence for e in events] == [1, 2, 3]
    assert any(isinstance(i, job_pb2.Heartbeat) for i in items)
    assert watch.job is not None and watch.job.state == JobState.SUCCEEDED


# Waits of 0.2 s, none shortened, within 1 s without an event.
STEADY_RETRY = RetryPolicy(initial_backoff=0.2, multiplier=1, jitter=0, watch_budget=1)


def test_each_event_starts_the_watch_budget_again(stand_in: tuple[StandIn, int]) -> None:
    servicer, port = stand_in
    servicer.job_events = 10  # 9 resumes: 1.8 s of waits, past the budget were it not reset
    with FineTuneClient(f"127.0.0.1:{port}", retry=STEADY_RETRY) as client:
        watch = client.watch_job("job-1")
        events = list(watch)
    assert [e.sequence for e in events] == list(range(1, 11))
    assert watch.resumes == 9


def test_a_drop_after_a_quiet_spell_longer_than_the_budget_is_resumed(
    stand_in: tuple[StandIn, int],
) -> None:
    servicer, port = stand_in
    servicer.quiet_first_seconds = 1.5  # past the 1 s budget, with heartbeats only
    with FineTuneClient(f"127.0.0.1:{port}", retry=STEADY_RETRY) as client:
        watch = client.watch_job("job-1")
        events = list(watch)
    assert [e.sequence for e in events] == [1, 2, 3]
    assert servicer.watch_positions == [0, 0, 1, 2]


def test_heartbeats_do_not_keep_a_watch_going(stand_in: tuple[StandIn, int]) -> None:
    servicer, port = stand_in
    servicer.send_events = False
    with FineTuneClient(f"127.0.0.1:{port}", retry=STEADY_RETRY) as client:
        watch = client.watch_job("job-1", heartbeats=True)
        with pytest.raises(FineTuneError) as raised:
            list(watch)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert "kept ending before the job finished" in raised.value.message
    # Tried at 0, 0.2, 0.4, 0.6, 0.8 and at the budget's end (1 s), then gave up.
    assert 2 <= len(servicer.watch_positions) <= 7
    assert set(servicer.watch_positions) == {0}


def test_retry_info_and_error_info_metadata_are_decoded(stand_in: tuple[StandIn, int]) -> None:
    _, port = stand_in
    with (
        FineTuneClient(f"127.0.0.1:{port}") as client,
        pytest.raises(FineTuneError) as raised,
    ):
        client.get_job("job-1")
    error = raised.value
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.message == "slow down"
    assert (error.reason, error.domain) == ("UPSTREAM_RATE_LIMITED", DOMAIN)
    assert error.metadata == {"provider": "openai"}
    assert error.retry_delay == timedelta(seconds=2)
    assert len(error.details) == 2
