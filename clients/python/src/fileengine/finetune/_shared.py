"""What the sync and asyncio clients share: transport settings, request building, the retry
policy and the WatchJob resume bookkeeping. No I/O here beyond reading dataset files."""

from __future__ import annotations

import abc
import hashlib
import os
import random
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeAlias

import grpc

from .errors import FineTuneError
from .v1 import completion_pb2, dataset_pb2, job_pb2

INLINE_LIMIT = 8 * 1024 * 1024
"""Datasets up to this size (bytes) are sent inline; larger ones go through UploadDataset."""

UPLOAD_CHUNK_SIZE = 1024 * 1024
"""UploadDataset chunk size in bytes."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest message the server accepts or sends; grpcio's receive default is only 4 MiB."""

TERMINAL_STATES = frozenset(
    {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
)

Dataset: TypeAlias = str | os.PathLike[str] | dataset_pb2.DatasetSource
"""A dataset: a path to a JSONL file, or a DatasetSource built by hand (inline or uploaded)."""

Messages: TypeAlias = str | Sequence[completion_pb2.ChatMessage]
"""A conversation: a single user message, or ChatMessages oldest first."""


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for the calls that are safe to repeat: StartTraining and WatchJob.

    StartTraining is retried on UNAVAILABLE with the same request_id (the server is idempotent
    per request_id), after the server's RetryInfo delay when it sends one (for example with
    reason UPSTREAM_OUTCOME_UNKNOWN; at most `max_backoff`), until `start_budget` seconds have
    passed since the first failure, or the client's `timeout` since the first try, or
    `attempts` tries were made when set.

    A watch is resumed from the last sequence received when its stream drops (UNAVAILABLE, or
    a transport INTERNAL such as an HTTP/2 RST_STREAM) or ends before the job did, until
    `watch_budget` seconds have passed since the first failure after the last event: each
    event starts the budget again, heartbeats do not. A restart of the server costs a watch
    nothing but the wait.

    Waits start at `initial_backoff` seconds and grow by `multiplier` up to `max_backoff`, each
    shortened by up to `jitter` of itself at random, so that the clients of a restarted server
    do not all come back at once.
    """

    attempts: int | None = None
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    watch_budget: float = 60.0
    start_budget: float = 60.0

    def backoff(self, failure: int) -> float:
        """The longest wait (seconds) after the `failure`-th consecutive failure (1-based)."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (failure - 1))

    def delay(self, failure: int, retry_delay: float | None) -> float:
        """Seconds to wait before retrying: the server's RetryInfo delay when it sent one
        (at most `max_backoff`), else the backoff less its random jitter."""
        if retry_delay is not None and retry_delay > 0:
            return min(self.max_backoff, retry_delay)
        return self.backoff(failure) * (1 - self.jitter * random.random())


DEFAULT_RETRY = RetryPolicy()


def channel_options(extra: Sequence[tuple[str, int | str]]) -> list[tuple[str, int | str]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *extra,
    ]


def channel_credentials(
    tls: bool, ca_file: str | os.PathLike[str] | None
) -> grpc.ChannelCredentials | None:
    """TLS credentials (the CA file's roots, else gRPC's default roots), or None: plaintext."""
    if ca_file is not None:
        return grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())
    if tls:
        return grpc.ssl_channel_credentials()
    return None


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata sent with every call: the bearer token, if any."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def inline_source(path: Path) -> dataset_pb2.DatasetSource:
    return dataset_pb2.DatasetSource(content=path.read_bytes(), file_name=path.name)


def upload_requests(
    path: Path, chunk_size: int = UPLOAD_CHUNK_SIZE
) -> Iterator[dataset_pb2.UploadDatasetRequest]:
    """The UploadDataset stream for a file: the header (name, SHA-256, size) with the first
    chunk, then the rest in order. The file is read twice (hash, then send), never held whole."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
            size += len(block)
    header = dataset_pb2.UploadDatasetHeader(
        file_name=path.name, sha256=digest.hexdigest(), size_bytes=size
    )
    with path.open("rb") as f:
        first = True
        while (chunk := f.read(chunk_size)) or first:
            yield dataset_pb2.UploadDatasetRequest(header=header if first else None, chunk=chunk)
            first = False


def uploaded_source(path: Path, dataset_id: str) -> dataset_pb2.DatasetSource:
    return dataset_pb2.DatasetSource(dataset_id=dataset_id, file_name=path.name)


def validate_request(
    training: dataset_pb2.DatasetSource,
    validation: dataset_pb2.DatasetSource | None,
    *,
    model: str,
    epochs: int | None,
    max_problems: int,
    min_examples_per_intent: int,
) -> dataset_pb2.ValidateDatasetRequest:
    return dataset_pb2.ValidateDatasetRequest(
        training=training,
        validation=validation,
        model=model,
        epochs=epochs,
        max_problems=max_problems,
        min_examples_per_intent=min_examples_per_intent,
    )


def new_request_id() -> str:
    """The idempotency key of a StartTraining call made without one: a UUID4."""
    return str(uuid.uuid4())


def training_request(
    training: dataset_pb2.DatasetSource,
    validation: dataset_pb2.DatasetSource | None,
    *,
    request_id: str,
    model: str,
    method: job_pb2.TrainingMethod.ValueType,
    suffix: str,
    n_epochs: int | None,
    batch_size: int | None,
    learning_rate_multiplier: float | None,
    beta: float | None,
    seed: int | None,
    metadata: Mapping[str, str] | None,
    accepted_problems: Sequence[dataset_pb2.AcceptedProblem] = (),
) -> job_pb2.StartTrainingRequest:
    return job_pb2.StartTrainingRequest(
        request_id=request_id,
        training=training,
        validation=validation,
        model=model,
        method=method,
        hyperparameters=job_pb2.Hyperparameters(
            n_epochs=n_epochs,
            batch_size=batch_size,
            learning_rate_multiplier=learning_rate_multiplier,
            beta=beta,
        ),
        suffix=suffix,
        seed=seed,
        metadata=metadata,
        accepted_problems=accepted_problems,
    )


def complete_request(
    messages: Messages,
    *,
    tier: str,
    model: str,
    system: str | None,
    temperature: float | None,
    max_output_tokens: int,
    stop: Sequence[str],
    user_id: str,
) -> completion_pb2.CompleteRequest:
    """A CompleteRequest; a plain string is one user message, `system` goes first."""
    if isinstance(messages, str):
        turns = [completion_pb2.ChatMessage(role=completion_pb2.CHAT_ROLE_USER, content=messages)]
    else:
        turns = list(messages)
    if system is not None:
        turns.insert(
            0, completion_pb2.ChatMessage(role=completion_pb2.CHAT_ROLE_SYSTEM, content=system)
        )
    return completion_pb2.CompleteRequest(
        messages=turns,
        tier=tier,
        model=model,
        temperature=temperature,
        max_output_tokens=max_output_tokens,
        stop=stop,
        user_id=user_id,
    )


def promote_request(
    tier: str, job_id: str | None, model: str | None
) -> completion_pb2.PromoteModelRequest:
    """A PromoteModelRequest from a job or a model (the server refuses both or neither)."""
    request = completion_pb2.PromoteModelRequest(tier=tier)
    if job_id is not None:
        request.job_id = job_id
    if model is not None:
        request.model = model
    return request


class WatchProgress:
    """Resume bookkeeping of one logical WatchJob: what to ask for after a dropped stream, what
    to hand to the caller, and when the job is over.

    The server sends a snapshot first, then events in sequence order, heartbeats in between,
    and ends the stream after the event that makes the job terminal. Resuming with
    after_sequence = last_sequence sends each event exactly once; the check on `sequence`
    below only guards against a server that would not.
    """

    def __init__(self, job_id: str, after_sequence: int) -> None:
        self.job_id = job_id
        self.last_sequence = after_sequence
        self.job: job_pb2.Job | None = None
        self.done = False

    def request(self) -> job_pb2.WatchJobRequest:
        return job_pb2.WatchJobRequest(job_id=self.job_id, after_sequence=self.last_sequence)

    def accept(self, item: job_pb2.WatchJobResponse) -> job_pb2.JobEvent | job_pb2.Heartbeat | None:
        """Records one stream item; returns the event or heartbeat to pass on, if any."""
        kind = item.WhichOneof("item")
        if kind == "snapshot":
            self.job = item.snapshot
            # Already over, and nothing left after our position: the stream ends now.
            if (
                item.snapshot.state in TERMINAL_STATES
                and item.snapshot.last_sequence <= self.last_sequence
            ):
                self.done = True
            return None
        if kind == "event":
            event = item.event
            if event.sequence <= self.last_sequence:
                return None
            self.last_sequence = event.sequence
            if event.HasField("job"):
                self.job = event.job
                if (
                    event.kind == job_pb2.JOB_EVENT_KIND_STATE_CHANGED
                    and event.job.state in TERMINAL_STATES
                ):
                    self.done = True
            return event
        if kind == "heartbeat":
            return item.heartbeat
        return None


def events_only(item: job_pb2.JobEvent | job_pb2.Heartbeat) -> job_pb2.JobEvent | None:
    """What a watch passes on by default: events, not heartbeats."""
    return item if isinstance(item, job_pb2.JobEvent) else None


def everything(item: job_pb2.JobEvent | job_pb2.Heartbeat) -> job_pb2.JobEvent | job_pb2.Heartbeat:
    """What a watch with heartbeats=True passes on."""
    return item


def resumable(error: FineTuneError) -> bool:
    """Whether a watch stream that failed with `error` is resumed: UNAVAILABLE (a dropped
    connection, a server shutting down or not there) or an INTERNAL that did not come from the
    service (grpcio's report of an HTTP/2 RST_STREAM: the service's own errors all carry an
    ErrorInfo, so a `reason`)."""
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    return error.code == grpc.StatusCode.INTERNAL and not error.reason


class ResumeBudget:
    """When a call is tried again, and when it gives up: the backoff of `policy` between tries,
    until `budget` seconds have passed since the first failure (for a watch: the first failure
    after the last event).

    The clock starts at that failure, not at the last event: a job can be quiet for longer than
    the budget (queued upstream for minutes, with only heartbeats), and a drop after such a
    quiet spell still gets the whole budget. Heartbeats do not stop the clock once it runs, so
    a server that keeps accepting and dropping the stream without progress ends the watch."""

    def __init__(self, policy: RetryPolicy, budget: float) -> None:
        self.policy = policy
        self.budget = budget
        self.failures = 0
        self.failing_since: float | None = None

    def event(self) -> None:
        """An event arrived: the stream works, the next failure starts a new budget."""
        self.failures = 0
        self.failing_since = None

    def next_delay(self, retry_delay: float | None = None) -> float | None:
        """Seconds to wait before trying again after a failure (the server's `retry_delay`
        when it sent one), or None when the budget is spent. The last wait ends when the budget
        does, so that one try is made at its end."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        self.failures += 1
        remaining = self.budget - (now - self.failing_since)
        if remaining <= 0:
            return None
        return min(self.policy.delay(self.failures, retry_delay), remaining)


class StartRetry:
    """The retries of one StartTraining: what deadline each try gets and how long to wait
    before the next, per `RetryPolicy` and the client's `timeout` (the caller's deadline for
    the whole start, retries included)."""

    def __init__(self, policy: RetryPolicy, timeout: float | None) -> None:
        self._policy = policy
        self._budget = ResumeBudget(policy, policy.start_budget)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._tries = 0

    def timeout(self) -> float | None:
        """The next try's timeout: what is left of the caller's."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def after(self, error: FineTuneError) -> float | None:
        """Seconds to wait before trying again after `error`, or None to raise it."""
        self._tries += 1
        attempts = self._policy.attempts
        if error.code != grpc.StatusCode.UNAVAILABLE or (
            attempts is not None and self._tries >= attempts
        ):
            return None
        wanted = error.retry_delay.total_seconds() if error.retry_delay is not None else None
        delay = self._budget.next_delay(wanted)
        if delay is None or (
            self._deadline is not None and time.monotonic() + delay >= self._deadline
        ):
            return None
        return delay


def generated_request_id(request_id: str | None) -> tuple[str, str]:
    """A start's request id, and what its errors carry: the id when the SDK made it up (the
    caller has no other way to learn it, and needs it to retry without making a second job),
    else ""."""
    if request_id:
        return request_id, ""
    generated = new_request_id()
    return generated, generated


class JobsPage(NamedTuple):
    """One page of ListJobs: the jobs, newest first, and the token of the next page ("" after
    the last)."""

    jobs: list[job_pb2.Job]
    next_page_token: str


def list_request(
    state: job_pb2.JobState.ValueType, page_size: int, page_token: str
) -> job_pb2.ListJobsRequest:
    return job_pb2.ListJobsRequest(state=state, page_size=page_size, page_token=page_token)


def jobs_page(response: job_pb2.ListJobsResponse) -> JobsPage:
    return JobsPage(list(response.jobs), response.next_page_token)


class Stoppable(abc.ABC):
    """A stream the caller can stop: `stop()`, and `cancel()`, its name in 0.1.0."""

    @abc.abstractmethod
    def stop(self) -> None: ...

    def cancel(self) -> None:
        """Deprecated: use stop()."""
        warnings.warn(
            f"{type(self).__name__}.cancel() is deprecated: use stop()",
            DeprecationWarning,
            stacklevel=2,
        )
        self.stop()


def ended_early(progress: WatchProgress) -> FineTuneError:
    """The error of a watch whose streams kept ending, without an error, before the job did."""
    return FineTuneError(
        grpc.StatusCode.UNAVAILABLE,
        f"WatchJob for {progress.job_id} kept ending before the job finished",
    )
