"""The asyncio client: the pipeline's calls, including a watch through a dropped connection."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest

from fileengine.finetune import (
    AsyncFineTuneClient,
    FineTuneError,
    Heartbeat,
    JobEvent,
    JobEventKind,
    JobState,
)

from harness import Harness
from prices import assert_cost


def test_validate_train_watch_through_a_cut(harness: Harness) -> None:
    async def pipeline() -> None:
        async with AsyncFineTuneClient(harness.address, timeout=60) as client:
            report = await client.validate_dataset(harness.sample_dataset)
            assert report.training.examples == 13 and report.error_count == 0

            started = await client.start_training(harness.sample_dataset, suffix="aio")
            assert uuid.UUID(started.job.request_id).version == 4

            watch = client.watch_job(started.job.id, heartbeats=True)
            events: list[JobEvent] = []
            cut = 0
            async for item in watch:
                if isinstance(item, Heartbeat):
                    continue
                events.append(item)
                if len(events) == 1:
                    cut = await asyncio.to_thread(harness.cut)

            assert cut >= 1
            assert watch.resumes >= 1
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert events[-1].kind == JobEventKind.STATE_CHANGED
            assert events[-1].job.state == JobState.SUCCEEDED
            job = await client.get_job(started.job.id)
            assert job.fine_tuned_model == events[-1].job.fine_tuned_model != ""

    asyncio.run(pipeline())


def test_complete_and_stream(harness: Harness) -> None:
    async def serve() -> None:
        async with AsyncFineTuneClient(harness.address, timeout=60) as client:
            completion = await client.complete("Hello", tier="pro")
            assert completion.tier == "pro" and completion.text
            assert_cost(completion, "claude-sonnet-5-5")

            stream = client.stream_complete("Hello", tier="pro")
            deltas = [delta async for delta in stream]
            assert stream.completion is not None
            assert stream.completion.text == "".join(deltas) != ""
            assert_cost(stream.completion, "claude-sonnet-5-5")

    asyncio.run(serve())


def test_errors_are_typed(harness: Harness, broken_dataset: Path) -> None:
    async def fail() -> None:
        async with AsyncFineTuneClient(harness.address, timeout=60) as client:
            with pytest.raises(FineTuneError) as raised:
                await client.start_training(broken_dataset)
            assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert raised.value.reason == "DATASET_INVALID"
            assert raised.value.precondition_violations[0].subject == "training:3"

            with pytest.raises(FineTuneError) as raised:
                async for _ in client.watch_job("job-does-not-exist"):
                    pass
            assert raised.value.code == grpc.StatusCode.NOT_FOUND
            assert raised.value.reason == "JOB_NOT_FOUND"

    asyncio.run(fail())
