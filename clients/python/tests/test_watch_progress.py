"""The resume bookkeeping of a watch, on hand-made stream items (no I/O)."""

from __future__ import annotations

from fileengine.finetune import JobEventKind, JobState
from fileengine.finetune._shared import WatchProgress
from fileengine.finetune.v1 import job_pb2


def event(sequence: int, state: JobState.ValueType | None = None) -> job_pb2.WatchJobResponse:
    if state is None:
        return job_pb2.WatchJobResponse(
            event=job_pb2.JobEvent(sequence=sequence, kind=JobEventKind.MESSAGE)
        )
    return job_pb2.WatchJobResponse(
        event=job_pb2.JobEvent(
            sequence=sequence,
            kind=JobEventKind.STATE_CHANGED,
            job=job_pb2.Job(state=state),
        )
    )


def snapshot(state: JobState.ValueType, last_sequence: int) -> job_pb2.WatchJobResponse:
    return job_pb2.WatchJobResponse(
        snapshot=job_pb2.Job(id="job-1", state=state, last_sequence=last_sequence)
    )


def test_resumes_after_the_last_event_and_drops_repeats() -> None:
    progress = WatchProgress("job-1", after_sequence=0)
    assert progress.accept(snapshot(JobState.RUNNING, 2)) is None
    assert progress.accept(event(1)) is not None
    assert progress.accept(event(2)) is not None
    assert progress.request().after_sequence == 2
    assert progress.accept(event(2)) is None  # a repeat is not passed on twice
    assert not progress.done


def test_the_terminal_state_change_ends_the_watch() -> None:
    progress = WatchProgress("job-1", after_sequence=4)
    progress.accept(snapshot(JobState.RUNNING, 4))
    progress.accept(event(5, JobState.RUNNING))
    assert not progress.done
    progress.accept(event(6, JobState.FAILED))
    assert progress.done
    assert progress.job is not None and progress.job.state == JobState.FAILED


def test_a_finished_job_with_nothing_after_the_position_is_done_at_the_snapshot() -> None:
    finished = WatchProgress("job-1", after_sequence=9)
    finished.accept(snapshot(JobState.SUCCEEDED, 9))
    assert finished.done

    behind = WatchProgress("job-1", after_sequence=3)
    behind.accept(snapshot(JobState.SUCCEEDED, 9))
    assert not behind.done  # events 4..9 are still to come


def test_heartbeats_are_passed_on_untouched() -> None:
    progress = WatchProgress("job-1", after_sequence=0)
    beat = job_pb2.WatchJobResponse(heartbeat=job_pb2.Heartbeat(last_sequence=0))
    assert progress.accept(beat) == beat.heartbeat
    assert progress.last_sequence == 0
