"""The API shape of clients/README.md ("The API, concept by concept"): one test per row of its
table, named after the row, checking what the row claims against the real server, through the
sync client and, where the row applies, the asyncio one (`api` runs each test body once per
client). The last test covers the names renamed in 0.2.0 and kept for one release.

The module runs its own harness: it promotes models and restarts the server, which the other
files must not see."""

from __future__ import annotations

import ast
import asyncio
import enum
import inspect
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, cast

import grpc
import pytest
from google.protobuf.descriptor import EnumDescriptor

import fileengine.finetune
from fileengine.finetune import (
    AsyncFineTuneClient,
    ChatRole,
    Completion,
    DatasetFormat,
    DatasetSource,
    FieldViolation,
    FineTuneClient,
    FineTuneError,
    FinishReason,
    Job,
    JobEventKind,
    JobsPage,
    JobState,
    PromoteModelResponse,
    Provider,
    Rating,
    RecordFeedbackResponse,
    RetryPolicy,
    Severity,
    StartTrainingResponse,
    Tier,
    TierStats,
    TrainingMethod,
    UploadDatasetResponse,
    ValidationReport,
)
from fileengine.finetune.v1 import completion_pb2, dataset_pb2, job_pb2

from harness import (
    Harness,
    assert_complete_history,
    broken_copy,
    start_harness,
    train_to_success,
)

CREATE_JOB = "POST /v1/fine_tuning/jobs"
ANTHROPIC_MESSAGES = "POST /v1/messages"
ENUMS = Path(fileengine.finetune.__file__).with_name("enums.pyi")


class Blocking:
    """The asyncio client seen in the sync client's shape: each awaitable runs to its end on
    `loop`, each async iterator gives one item per `next()`, attributes pass through. So one
    test body checks both clients call for call, and a method the asyncio client lacks, or
    that does not take the sync one's arguments, fails it."""

    def __init__(self, target: object, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        async def invoke(*args: Any, **kwargs: Any) -> Any:
            # In the loop, as asyncio code calls it: grpc.aio starts calls on the running loop.
            result = value(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        def call(*args: Any, **kwargs: Any) -> Any:
            result = self._loop.run_until_complete(invoke(*args, **kwargs))
            return Blocking(result, self._loop) if hasattr(result, "__aiter__") else result

        return call

    def __iter__(self) -> Blocking:
        return self

    def __next__(self) -> Any:
        try:
            return self._loop.run_until_complete(anext(self._target))  # type: ignore[call-overload]
        except StopAsyncIteration:
            raise StopIteration from None


class Connect(Protocol):
    def __call__(self, address: str | None = None, **options: Any) -> FineTuneClient: ...


@pytest.fixture(scope="module")
def shape_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with start_harness(tmp_path_factory.mktemp("shape-harness") / "harness.log") as harness:
        yield harness


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest, shape_harness: Harness) -> Iterator[Connect]:
    """Makes clients of one kind (sync, or asyncio behind Blocking), typed as the sync one:
    the asyncio client must take the same calls. Closed at the end of the test."""
    loop = asyncio.new_event_loop()
    closers: list[Any] = []

    def connect(address: str | None = None, **options: Any) -> FineTuneClient:
        options.setdefault("timeout", 60)
        address = address or shape_harness.address
        if request.param == "sync":
            sync = FineTuneClient(address, **options)
            closers.append(sync.close)
            return sync

        async def make() -> AsyncFineTuneClient:  # grpc.aio channels belong to a loop
            return AsyncFineTuneClient(address, **options)

        client = loop.run_until_complete(make())
        closers.append(lambda: loop.run_until_complete(client.close()))
        return cast(FineTuneClient, Blocking(client, loop))

    yield connect
    for close in closers:
        close()
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture
def api(connect: Connect) -> FineTuneClient:
    return connect()


@pytest.fixture(autouse=True)
def no_faults_left(shape_harness: Harness) -> Iterator[None]:
    yield
    shape_harness.clear_faults()


@pytest.fixture(scope="module")
def trained(shape_harness: Harness) -> Job:
    """A job of this module's server trained to success."""
    with FineTuneClient(shape_harness.address, timeout=60) as client:
        return train_to_success(client, shape_harness.sample_dataset, "shape")


@pytest.fixture
def broken(shape_harness: Harness, tmp_path: Path) -> Path:
    return broken_copy(shape_harness.sample_dataset, tmp_path)


def test_validate(api: FineTuneClient, shape_harness: Harness, broken: Path) -> None:
    report = api.validate_dataset(shape_harness.sample_dataset)
    assert isinstance(report, ValidationReport)
    assert report.error_count == 0 and report.training.examples == 13

    # A dataset with errors is a report, not an error.
    bad = api.validate_dataset(broken)
    assert bad.error_count == 1

    source = DatasetSource(content=broken.read_bytes(), file_name="broken.jsonl")
    assert api.validate_dataset(source).error_count == 1


def test_upload(connect: Connect, shape_harness: Harness) -> None:
    dataset = shape_harness.sample_dataset
    uploaded = connect().upload_dataset(dataset)
    assert isinstance(uploaded, UploadDatasetResponse)
    assert uploaded.size_bytes == dataset.stat().st_size and uploaded.dataset_id

    # Inline up to the limit (8 MiB by default), uploaded above it.
    assert connect().dataset_source(dataset).WhichOneof("source") == "content"
    small_limit = connect(inline_limit=1024)
    assert small_limit.dataset_source(dataset).dataset_id == uploaded.dataset_id


def test_start(api: FineTuneClient, shape_harness: Harness) -> None:
    started = api.start_training(shape_harness.sample_dataset, suffix="start", n_epochs=50)
    assert isinstance(started, StartTrainingResponse)
    assert started.HasField("job") and started.job.id
    assert started.report.training.examples == 13
    assert uuid.UUID(started.job.request_id).version == 4  # made by the SDK
    again = api.start_training(
        shape_harness.sample_dataset, suffix="start", n_epochs=50, request_id=started.job.request_id
    )
    assert again.job.id == started.job.id
    api.cancel_job(started.job.id)

    # The defaults: waits from 0.2 s doubling to 5 s, with jitter; RetryInfo up to 5 s; 60 s
    # from the first failure.
    policy = RetryPolicy()
    assert (policy.initial_backoff, policy.multiplier, policy.max_backoff) == (0.2, 2.0, 5.0)
    assert 0 < policy.jitter < 1 and policy.attempts is None and policy.start_budget == 60
    assert policy.delay(1, 30.0) == 5.0

    # With them a start waits out a restart, and makes one job.
    shape_harness.restart(down_ms=2000)
    during = api.start_training(shape_harness.sample_dataset, suffix="restart", n_epochs=50).job
    assert shape_harness.upstream_jobs(during.request_id) == [during.upstream_id]
    api.cancel_job(during.id)


def test_get(api: FineTuneClient, trained: Job) -> None:
    job = api.get_job(trained.id)
    assert isinstance(job, Job)
    assert (job.id, job.state, job.fine_tuned_model) == (
        trained.id,
        JobState.SUCCEEDED,
        trained.fine_tuned_model,
    )


def test_list(api: FineTuneClient, shape_harness: Harness) -> None:
    made = [
        api.start_training(shape_harness.sample_dataset, suffix=f"list{i}", n_epochs=50).job
        for i in range(3)
    ]
    for job in made:
        api.cancel_job(job.id)

    # Every job, newest first, more than one page of them.
    listed = list(api.list_jobs(page_size=2))
    assert len(listed) > 2
    assert [j.id for j in listed[:3]] == [j.id for j in reversed(made)]
    assert len({j.id for j in listed}) == len(listed)
    stamps = [j.create_time.ToDatetime() for j in listed]
    assert stamps == sorted(stamps, reverse=True)
    cancelled = list(api.list_jobs(state=JobState.CANCELLED))
    assert {j.id for j in made} <= {j.id for j in cancelled}
    assert all(j.state == JobState.CANCELLED for j in cancelled)

    # One page, and the token of the next.
    page = api.list_jobs_page(page_size=2)
    assert isinstance(page, JobsPage)
    jobs, token = page
    assert [j.id for j in jobs] == [j.id for j in listed[:2]] and token
    second = api.list_jobs_page(page_size=2, page_token=token)
    assert [j.id for j in second.jobs] == [j.id for j in listed[2:4]]


def test_cancel(api: FineTuneClient, shape_harness: Harness) -> None:
    job = api.start_training(shape_harness.sample_dataset, suffix="cancel", n_epochs=50).job
    cancelled = api.cancel_job(job.id)
    assert isinstance(cancelled, Job)
    assert (cancelled.id, cancelled.state) == (job.id, JobState.CANCELLED)


def test_watch(api: FineTuneClient, shape_harness: Harness, trained: Job) -> None:
    job = api.start_training(shape_harness.sample_dataset, suffix="watch", n_epochs=50).job
    watch = api.watch_job(job.id)
    assert watch.job is None  # nothing received yet
    first = next(watch)
    assert first.sequence == 1 == watch.last_sequence
    assert watch.job is not None and watch.job.id == job.id
    assert watch.resumes == 0
    watch.stop()
    assert list(watch) == []
    assert api.get_job(job.id).state not in fileengine.finetune.TERMINAL_STATES  # goes on
    api.cancel_job(job.id)

    # To the end: every event once, in order, ending with the terminal one.
    whole = api.watch_job(trained.id)
    events = list(whole)
    assert_complete_history(events, JobState.SUCCEEDED)
    assert whole.last_sequence == trained.last_sequence
    assert whole.job is not None and whole.job.state == JobState.SUCCEEDED

    tail = list(api.watch_job(trained.id, after_sequence=10))
    assert [e.sequence for e in tail] == [e.sequence for e in events[10:]]


def test_complete(api: FineTuneClient) -> None:
    completion = api.complete("Hello", tier="pro")
    assert isinstance(completion, Completion)
    assert completion.tier == "pro" and completion.text and completion.response_id


def test_stream(api: FineTuneClient) -> None:
    stream = api.stream_complete("Build me a landing page", tier="pro")
    assert stream.completion is None
    deltas = list(stream)
    assert len(deltas) > 1 and all(isinstance(d, str) for d in deltas)
    assert isinstance(stream.completion, Completion)
    assert stream.completion.text == "".join(deltas)

    stopped = api.stream_complete("Build me a landing page", tier="pro")
    assert isinstance(next(stopped), str)
    stopped.stop()
    list(stopped)  # ends without an error
    assert stopped.completion is None


def test_tiers(api: FineTuneClient) -> None:
    tiers = api.list_tiers()
    assert isinstance(tiers, list) and all(isinstance(t, Tier) for t in tiers)
    assert {"fast", "pro", "auto"} <= {t.name for t in tiers}


def test_promote(api: FineTuneClient, trained: Job) -> None:
    before = next(t.model for t in api.list_tiers() if t.name == "fast")
    by_model = api.promote_model("fast", model=trained.fine_tuned_model)
    assert isinstance(by_model, PromoteModelResponse)
    assert by_model.tier.model == trained.fine_tuned_model
    assert by_model.previous_model == before

    by_job = api.promote_model("fast", job_id=trained.id)
    assert (by_job.tier.model, by_job.tier.promoted_from_job) == (
        trained.fine_tuned_model,
        trained.id,
    )
    assert by_job.previous_model == trained.fine_tuned_model


def test_feedback(api: FineTuneClient) -> None:
    completion = api.complete("Hello", tier="pro")
    feedback = api.record_feedback(completion.response_id, Rating.UP)
    assert isinstance(feedback, RecordFeedbackResponse)
    assert (feedback.tier, feedback.arm) == ("pro", completion.arm)


def test_stats(api: FineTuneClient) -> None:
    api.complete("Hello", tier="pro")
    every = api.get_tier_stats()
    assert isinstance(every, list) and all(isinstance(s, TierStats) for s in every)
    assert "pro" in {s.tier for s in every}
    pro = api.get_tier_stats("pro")
    assert pro and {s.tier for s in pro} == {"pro"}
    assert sum(s.requests for s in pro) >= 1


def test_errors_type(api: FineTuneClient, broken: Path) -> None:
    failing: list[Callable[[], object]] = [
        lambda: api.get_job("job-missing"),
        lambda: list(api.watch_job("job-missing")),
        lambda: api.start_training(broken),
        lambda: api.complete("Hello", tier="no-such-tier"),
        lambda: list(api.stream_complete("Hello", tier="no-such-tier")),
    ]
    for call in failing:
        with pytest.raises(FineTuneError):
            call()


def test_errors_code(api: FineTuneClient) -> None:
    with pytest.raises(FineTuneError) as raised:
        api.get_job("job-missing")
    assert raised.value.code is grpc.StatusCode.NOT_FOUND
    assert raised.value.code_name == "NOT_FOUND"


def test_errors_reason(connect: Connect, shape_harness: Harness) -> None:
    with pytest.raises(FineTuneError) as raised:
        connect().get_job("job-missing")
    assert raised.value.reason == "JOB_NOT_FOUND"

    # No ErrorInfo (nothing listens: a transport failure): "".
    with pytest.raises(FineTuneError) as raised:
        connect(closed_address(), timeout=10).get_job("job-missing")
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert (raised.value.reason, raised.value.domain) == ("", "")


def test_errors_retry_delay(api: FineTuneClient, shape_harness: Harness) -> None:
    # Anthropic rate-limits the server more times than it retries: RetryInfo reaches us.
    shape_harness.inject(ANTHROPIC_MESSAGES, "rate_limit", times=3, retry_after_ms=100)
    with pytest.raises(FineTuneError) as raised:
        api.complete("Hello", tier="pro")
    error = raised.value
    assert error.reason == "UPSTREAM_RATE_LIMITED", error
    assert isinstance(error.retry_delay, timedelta) and error.retry_delay > timedelta(0)

    with pytest.raises(FineTuneError) as raised:
        api.get_job("job-missing")
    assert raised.value.retry_delay is None


def test_errors_details(api: FineTuneClient, broken: Path) -> None:
    with pytest.raises(FineTuneError) as raised:
        api.get_job("job-missing")
    assert raised.value.metadata == {"job_id": "job-missing"}

    with pytest.raises(FineTuneError) as raised:
        api.validate_dataset(DatasetSource())
    assert raised.value.field_violations == (
        FieldViolation("training", "set either content or dataset_id"),
    )

    with pytest.raises(FineTuneError) as raised:
        api.start_training(broken)
    violations = raised.value.precondition_violations
    assert [(v.type, v.subject) for v in violations] == [("invalid_json", "training:3")]


def test_errors_request_id(connect: Connect, shape_harness: Harness) -> None:
    hurried = connect(timeout=1)
    # OpenAI takes 3 s to create: the caller's deadline passes while the job is being made.
    shape_harness.inject(CREATE_JOB, "latency", ms=3000)
    with pytest.raises(FineTuneError) as raised:
        hurried.start_training(shape_harness.sample_dataset)
    generated = raised.value.request_id
    assert uuid.UUID(generated).version == 4
    job = connect().start_training(shape_harness.sample_dataset, request_id=generated).job
    assert shape_harness.upstream_jobs(generated) == [job.upstream_id]

    # The caller's own id, which it has: "".
    shape_harness.inject(CREATE_JOB, "latency", ms=3000)
    with pytest.raises(FineTuneError) as raised:
        hurried.start_training(shape_harness.sample_dataset, request_id=str(uuid.uuid4()))
    assert raised.value.request_id == ""

    with pytest.raises(FineTuneError) as raised:
        hurried.get_job("job-missing")
    assert raised.value.request_id == ""


# Typed Any: type checkers see them through enums.pyi, not as IntEnums.
SHORT_ENUMS: list[tuple[Any, EnumDescriptor]] = [
    (JobState, job_pb2.JobState.DESCRIPTOR),
    (JobEventKind, job_pb2.JobEventKind.DESCRIPTOR),
    (TrainingMethod, job_pb2.TrainingMethod.DESCRIPTOR),
    (FinishReason, completion_pb2.FinishReason.DESCRIPTOR),
    (ChatRole, completion_pb2.ChatRole.DESCRIPTOR),
    (Rating, completion_pb2.Rating.DESCRIPTOR),
    (Provider, completion_pb2.Provider.DESCRIPTOR),
    (Severity, dataset_pb2.Severity.DESCRIPTOR),
    (DatasetFormat, dataset_pb2.DatasetFormat.DESCRIPTOR),
]


def short_names(descriptor: EnumDescriptor) -> dict[str, int]:
    prefix = descriptor.values[0].name.removesuffix("UNSPECIFIED")
    return {v.name.removeprefix(prefix): v.number for v in descriptor.values}


def test_enums(api: FineTuneClient, trained: Job) -> None:
    # What the server sends compares with the short names, and names itself by them.
    state = api.get_job(trained.id).state
    assert state == JobState.SUCCEEDED == job_pb2.JOB_STATE_SUCCEEDED
    assert JobState(state).name == "SUCCEEDED"
    assert isinstance(JobState.SUCCEEDED, enum.IntEnum)

    # Every value of every enum of the protos, at run time and in the stub type checkers read.
    stub = ast.parse(ENUMS.read_text())
    declared = {
        c.name: {
            s.target.id
            for s in c.body
            if isinstance(s, ast.AnnAssign)
            and isinstance(s.target, ast.Name)
            and ast.unparse(s.annotation).startswith("Final[")
        }
        for c in stub.body
        if isinstance(c, ast.ClassDef)
    }
    for short, descriptor in SHORT_ENUMS:
        names = short_names(descriptor)
        assert {m.name: m.value for m in short} == names, short
        assert getattr(fileengine.finetune, descriptor.name) is short
        for name, number in names.items():
            assert short(number).name == name and short[name] == number
        full = {v.name for v in descriptor.values}
        assert declared[descriptor.name] == names.keys() | full, f"enums.pyi: {short}"


def test_async() -> None:
    # Every public method of the sync client, with the same parameters; the calls are checked
    # against the server by every test above that takes `api` or `connect`.
    sync_methods = {
        n: m for n, m in inspect.getmembers(FineTuneClient, inspect.isfunction) if n[0] != "_"
    }
    for name, method in sync_methods.items():
        twin = getattr(AsyncFineTuneClient, name, None)
        assert twin is not None, f"AsyncFineTuneClient.{name} is missing"
        assert list(inspect.signature(twin).parameters) == list(
            inspect.signature(method).parameters
        ), name
    iterators = {"list_jobs", "watch_job", "stream_complete"}
    for name in sync_methods.keys() - iterators - {"close"}:
        assert inspect.iscoroutinefunction(getattr(AsyncFineTuneClient, name)), name
    assert inspect.isasyncgenfunction(AsyncFineTuneClient.list_jobs)


def test_deprecated_names(api: FineTuneClient, shape_harness: Harness) -> None:
    job = api.start_training(shape_harness.sample_dataset, suffix="old", n_epochs=50).job
    watch = api.watch_job(job.id)
    next(watch)
    with pytest.warns(DeprecationWarning, match=r"cancel\(\) is deprecated: use stop\(\)"):
        watch.cancel()
    assert list(watch) == []
    api.cancel_job(job.id)

    stream = api.stream_complete("Build me a landing page", tier="pro")
    next(stream)
    with pytest.warns(DeprecationWarning, match=r"cancel\(\) is deprecated"):
        stream.cancel()
    list(stream)
    assert stream.completion is None

    shape_harness.inject(ANTHROPIC_MESSAGES, "rate_limit", times=3, retry_after_ms=100)
    with pytest.raises(FineTuneError) as raised:
        api.complete("Hello", tier="pro")
    assert raised.value.retry_delay is not None
    with pytest.warns(DeprecationWarning, match="retry_delay_seconds"):
        seconds = raised.value.retry_delay_seconds
    assert seconds == raised.value.retry_delay.total_seconds()

    # The prefixed enum names of 0.1.0: the same members.
    assert JobState.JOB_STATE_SUCCEEDED is JobState.SUCCEEDED
    with pytest.warns(DeprecationWarning, match=r"JobState\(x\)\.name"):
        assert JobState.Name(job_pb2.JOB_STATE_SUCCEEDED) == "SUCCEEDED"
    with pytest.warns(DeprecationWarning, match=r"JobState\[name\]"):
        assert JobState.Value("JOB_STATE_RUNNING") == JobState.RUNNING
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names do not warn
        assert JobState(4).name == "SUCCEEDED"


def closed_address() -> str:
    """An address nothing listens on: a port bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"
