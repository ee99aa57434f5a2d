"""The order of a watched job's events, as a client that follows `watch.job` sees it."""

from __future__ import annotations

from fileengine.finetune import FineTuneClient, JobEventKind, JobState

from harness import Harness


def test_steps_come_while_the_job_is_running_and_each_state_comes_once(
    client: FineTuneClient, harness: Harness
) -> None:
    job = client.start_training(harness.sample_dataset, suffix="order").job
    watch = client.watch_job(job.id)
    states: list[int] = []
    shown_at_steps: set[int] = set()
    for event in watch:
        if event.kind == JobEventKind.STATE_CHANGED:
            states.append(event.job.state)
        elif event.kind in (
            JobEventKind.METRICS,
            JobEventKind.CHECKPOINT,
        ):
            assert watch.job is not None
            shown_at_steps.add(watch.job.state)
    # A client showing the job it follows never shows a step of a job still validating or
    # queued.
    assert shown_at_steps == {JobState.RUNNING}
    # One state change per state, in lifecycle order (QUEUED only if a poll saw it).
    assert states[0] == JobState.VALIDATING_FILES
    assert states == sorted(set(states)), [JobState(s).name for s in states]
    assert states[-2:] == [JobState.RUNNING, JobState.SUCCEEDED]
