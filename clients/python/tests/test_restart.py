"""A server restart mid-watch: the server drains and stops, connections are cut and then
refused for 5 s (UNAVAILABLE), and it starts again on the same address and data. A watch with
the default policy must carry on to the job's end, every event once and in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from fileengine.finetune import (
    AsyncFineTuneClient,
    FineTuneClient,
    FineTuneError,
    Heartbeat,
    JobEvent,
    JobState,
    RetryPolicy,
)

from harness import Harness, assert_complete_history, start_harness

DOWN_MS = 5000
# Events seen before the restart: the job is under way, far from its end.
EVENTS_BEFORE_RESTART = 3


@pytest.fixture(scope="module")
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """A harness of its own: the restarts do not disturb the session's server."""
    with start_harness(tmp_path_factory.mktemp("restart") / "harness.log") as harness:
        yield harness


def test_a_watch_continues_through_a_server_restart(restartable: Harness) -> None:
    with FineTuneClient(restartable.address, timeout=60) as client:
        job = client.start_training(restartable.sample_dataset, suffix="restart").job
        watch = client.watch_job(job.id)
        events: list[JobEvent] = []
        for event in watch:
            events.append(event)
            if len(events) == EVENTS_BEFORE_RESTART:
                restartable.restart(DOWN_MS)
                assert not restartable.up()

        assert watch.resumes >= 1
        assert_complete_history(events, JobState.SUCCEEDED)
        assert watch.job is not None and watch.job.state == JobState.SUCCEEDED
        assert client.get_job(job.id).last_sequence == events[-1].sequence


def test_an_asyncio_watch_continues_through_a_server_restart(restartable: Harness) -> None:
    async def scenario() -> tuple[list[JobEvent], int]:
        async with AsyncFineTuneClient(restartable.address, timeout=60) as client:
            job = (await client.start_training(restartable.sample_dataset, suffix="aio")).job
            watch = client.watch_job(job.id, heartbeats=True)
            events: list[JobEvent] = []
            async for item in watch:
                if isinstance(item, Heartbeat):
                    continue
                events.append(item)
                if len(events) == EVENTS_BEFORE_RESTART:
                    await asyncio.to_thread(restartable.restart, DOWN_MS)
            return events, watch.resumes

    events, resumes = asyncio.run(scenario())
    assert resumes >= 1
    assert_complete_history(events, JobState.SUCCEEDED)


def test_a_start_that_fails_in_a_restart_is_retried_with_its_request_id(
    restartable: Harness,
) -> None:
    restartable.restart(DOWN_MS)
    # A client that does not retry, so that the restart's UNAVAILABLE reaches the caller.
    with (
        FineTuneClient(restartable.address, retry=RetryPolicy(attempts=1)) as impatient,
        pytest.raises(FineTuneError) as raised,
    ):
        impatient.start_training(restartable.sample_dataset)
    error = raised.value
    assert error.code == grpc.StatusCode.UNAVAILABLE, error
    assert error.request_id, "the SDK made the id: the error carries it"
    assert error.request_id in str(error)

    # The README's retry: the same id, with the default policy, which waits out the restart.
    with FineTuneClient(restartable.address, timeout=60) as client:
        job = client.start_training(restartable.sample_dataset, request_id=error.request_id).job
    assert job.request_id == error.request_id
    assert restartable.upstream_jobs(error.request_id) == [job.upstream_id]
