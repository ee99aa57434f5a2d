"""Training jobs: idempotent starts, watching through a dropped connection, cancel, list."""

from __future__ import annotations

import uuid

import grpc
import pytest

from fileengine.finetune import (
    TERMINAL_STATES,
    FineTuneClient,
    FineTuneError,
    Job,
    JobEvent,
    JobState,
)

from harness import Harness, assert_complete_history


def test_start_training_generates_a_request_id_and_is_idempotent(
    client: FineTuneClient, harness: Harness
) -> None:
    first = client.start_training(harness.sample_dataset, suffix="idempotent")
    assert uuid.UUID(first.job.request_id).version == 4
    assert first.report.training.examples == 13
    assert first.job.estimated_cost_usd == pytest.approx(first.report.estimated_cost_usd)

    again = client.start_training(
        harness.sample_dataset, suffix="idempotent", request_id=first.job.request_id
    )
    assert again.job.id == first.job.id

    with pytest.raises(FineTuneError) as raised:  # the same key for another request
        client.start_training(
            harness.sample_dataset, suffix="other", request_id=first.job.request_id
        )
    assert raised.value.code == grpc.StatusCode.ALREADY_EXISTS


def test_watch_resumes_after_the_connection_is_cut(
    client: FineTuneClient, harness: Harness
) -> None:
    job = client.start_training(harness.sample_dataset, suffix="cut").job
    watch = client.watch_job(job.id)
    events: list[JobEvent] = []
    cut = 0
    for event in watch:
        events.append(event)
        if len(events) == 1:
            # Mid-job: the first event comes at once, the job lasts seconds more.
            cut = harness.cut()

    assert cut >= 1, "the watch stream should have been open when the harness cut it"
    assert watch.resumes >= 1
    assert len(events) > 50
    assert_complete_history(events, JobState.SUCCEEDED)
    assert watch.last_sequence == events[-1].sequence
    assert watch.job is not None
    assert watch.job.fine_tuned_model.startswith("ft:gpt-4o-2024-08-06:")
    assert client.get_job(job.id).state == JobState.SUCCEEDED


def test_watch_from_a_position_and_of_a_finished_job(
    client: FineTuneClient, succeeded_job: Job
) -> None:
    everything = list(client.watch_job(succeeded_job.id))
    assert_complete_history(everything, JobState.SUCCEEDED)

    tail = list(client.watch_job(succeeded_job.id, after_sequence=10))
    assert [e.sequence for e in tail] == [e.sequence for e in everything[10:]]

    watch = client.watch_job(succeeded_job.id, after_sequence=succeeded_job.last_sequence)
    assert list(watch) == []
    assert watch.job is not None and watch.job.state == JobState.SUCCEEDED


def test_cancel_a_job(client: FineTuneClient, harness: Harness) -> None:
    job = client.start_training(harness.sample_dataset, suffix="cancel", n_epochs=50).job
    cancelled = client.cancel_job(job.id)
    assert cancelled.state == JobState.CANCELLED

    events = list(client.watch_job(job.id))
    assert_complete_history(events, JobState.CANCELLED)

    with pytest.raises(FineTuneError) as raised:
        client.cancel_job(job.id)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_list_jobs_pages_through_every_job(client: FineTuneClient, succeeded_job: Job) -> None:
    listed = list(client.list_jobs(page_size=1))
    assert succeeded_job.id in [j.id for j in listed]
    assert len({j.id for j in listed}) == len(listed)

    succeeded = list(client.list_jobs(state=JobState.SUCCEEDED))
    assert succeeded_job.id in [j.id for j in succeeded]
    assert all(j.state == JobState.SUCCEEDED for j in succeeded)


def test_an_unknown_job_is_not_found(client: FineTuneClient) -> None:
    with pytest.raises(FineTuneError) as raised:
        client.get_job("job-does-not-exist")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert raised.value.reason == "JOB_NOT_FOUND"

    with pytest.raises(FineTuneError) as raised:
        list(client.watch_job("job-does-not-exist"))
    assert raised.value.reason == "JOB_NOT_FOUND"


def test_a_watch_can_be_stopped_without_stopping_the_job(
    client: FineTuneClient, harness: Harness
) -> None:
    job = client.start_training(harness.sample_dataset, suffix="stop", n_epochs=50).job
    watch = client.watch_job(job.id)
    seen = [next(watch)]
    watch.stop()
    seen += list(watch)

    assert [e.sequence for e in seen] == [1]
    assert client.get_job(job.id).state not in TERMINAL_STATES
    client.cancel_job(job.id)
