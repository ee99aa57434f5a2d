"""FineTuneClient: the synchronous client, a thin layer over the generated stub.

Every method sends the bearer token (if any), turns grpc.RpcError into FineTuneError, and
returns the generated message types (fileengine.finetune.v1) unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Generic, Literal, Protocol, TypeVar, overload

import grpc

from . import _shared
from ._shared import Dataset, JobsPage, Messages, RetryPolicy, Stoppable
from .errors import FineTuneError
from .v1 import completion_pb2, dataset_pb2, job_pb2, service_pb2_grpc

__all__ = ["CompletionStream", "FineTuneClient", "JobWatch"]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Item = TypeVar("_Item")
_Response_co = TypeVar("_Response_co", covariant=True)


class _ResponseStream(Protocol[_Response_co]):
    """What grpcio returns for a server-streaming call."""

    def __iter__(self) -> Iterator[_Response_co]: ...

    def cancel(self) -> bool: ...


class FineTuneClient:
    """A connection to the FineTune service.

    Args:
        address: `host:port` of the server.
        token: sent as `authorization: Bearer <token>` on every call.
        tls: use TLS with gRPC's default root certificates. Plaintext by default.
        ca_file: use TLS trusting the certificates in this PEM file (implies `tls`).
        timeout: deadline in seconds for each unary call (for start_training, for the start
            as a whole, its retries included); None waits as long as it takes.
        retry: backoff for StartTraining retries and WatchJob resumes.
        inline_limit: datasets larger than this many bytes go through UploadDataset.
        upload_chunk_size: bytes per UploadDataset message.
        options: extra grpc channel options.

    Use it as a context manager, or call close().
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy = _shared.DEFAULT_RETRY,
        inline_limit: int = _shared.INLINE_LIMIT,
        upload_chunk_size: int = _shared.UPLOAD_CHUNK_SIZE,
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        credentials = _shared.channel_credentials(tls, ca_file)
        opts = _shared.channel_options(options)
        self._channel = (
            grpc.secure_channel(address, credentials, opts)
            if credentials is not None
            else grpc.insecure_channel(address, opts)
        )
        self._stub = service_pb2_grpc.FineTuneServiceStub(self._channel)
        self._metadata = _shared.call_metadata(token)
        self._timeout = timeout
        self._retry = retry
        self._inline_limit = inline_limit
        self._chunk_size = upload_chunk_size

    def __enter__(self) -> FineTuneClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls in progress fail with CANCELLED."""
        self._channel.close()

    @property
    def stub(self) -> service_pb2_grpc.FineTuneServiceStub:
        """The generated stub, for what the wrapper does not cover; pass it
        `metadata=client.metadata` to send the token."""
        return self._stub

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata the client sends with every call (the bearer token)."""
        return self._metadata

    # Datasets

    def validate_dataset(
        self,
        training: Dataset,
        *,
        validation: Dataset | None = None,
        model: str = "",
        epochs: int | None = None,
        max_problems: int = 0,
        min_examples_per_intent: int = 0,
    ) -> dataset_pb2.ValidationReport:
        """Validates a dataset (a path, uploaded first when over `inline_limit`). A dataset with
        errors is not an exception: they are in the report (`error_count`, `problems`)."""
        request = _shared.validate_request(
            self.dataset_source(training),
            self.dataset_source(validation) if validation is not None else None,
            model=model,
            epochs=epochs,
            max_problems=max_problems,
            min_examples_per_intent=min_examples_per_intent,
        )
        return self._unary(self._stub.ValidateDataset, request).report

    def upload_dataset(self, path: str | os.PathLike[str]) -> dataset_pb2.UploadDatasetResponse:
        """Streams a file to the server in chunks, with its SHA-256 and size to check against."""
        requests = _shared.upload_requests(Path(path), self._chunk_size)
        try:
            return self._stub.UploadDataset(
                requests, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise FineTuneError.from_rpc_error(error) from error

    def dataset_source(self, dataset: Dataset) -> dataset_pb2.DatasetSource:
        """The DatasetSource for a path: inline up to `inline_limit` bytes, else uploaded."""
        if isinstance(dataset, dataset_pb2.DatasetSource):
            return dataset
        path = Path(dataset)
        if path.stat().st_size <= self._inline_limit:
            return _shared.inline_source(path)
        return _shared.uploaded_source(path, self.upload_dataset(path).dataset_id)

    # Training jobs

    def start_training(
        self,
        training: Dataset,
        *,
        validation: Dataset | None = None,
        model: str = "",
        method: job_pb2.TrainingMethod.ValueType = job_pb2.TRAINING_METHOD_UNSPECIFIED,
        suffix: str = "",
        n_epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate_multiplier: float | None = None,
        beta: float | None = None,
        seed: int | None = None,
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
        accepted_problems: Sequence[dataset_pb2.AcceptedProblem] = (),
    ) -> job_pb2.StartTrainingResponse:
        """Starts a training job and returns at once (the job and the validation report).

        `request_id` is the idempotency key; a new UUID4 when not given (read it back from
        `response.job.request_id`). The call is retried on UNAVAILABLE with the same id, which
        the server answers with the same job; that includes reason UPSTREAM_OUTCOME_UNKNOWN,
        when OpenAI may have created the job but the server could not confirm it yet. Waits
        start at 0.2 s and double up to 5 s, with jitter (the server's RetryInfo delay instead,
        up to 5 s); it gives up 60 s after the first failure, or when the client's `timeout`
        has passed since the call began (see RetryPolicy). When the id was generated, every
        FineTuneError it raises carries it in `error.request_id`: after DEADLINE_EXCEEDED, or
        UNAVAILABLE after the retries, call again with `request_id=error.request_id`; the same
        id never makes a second job.
        A dataset with errors raises FineTuneError FAILED_PRECONDITION, reason DATASET_INVALID,
        with `precondition_violations`. `accepted_problems` (`dataset_pb2.AcceptedProblem`,
        only `possible_secret`) are reviewed problems that no longer block the job; the job
        records them.
        """
        # Made before anything can fail, so that every error can carry it.
        request_id, generated = _shared.generated_request_id(request_id)
        try:
            request = _shared.training_request(
                self.dataset_source(training),
                self.dataset_source(validation) if validation is not None else None,
                request_id=request_id,
                model=model,
                method=method,
                suffix=suffix,
                n_epochs=n_epochs,
                batch_size=batch_size,
                learning_rate_multiplier=learning_rate_multiplier,
                beta=beta,
                seed=seed,
                metadata=metadata,
                accepted_problems=accepted_problems,
            )
            retry = _shared.StartRetry(self._retry, self._timeout)
            while True:
                try:
                    return self._call(self._stub.StartTraining, request, retry.timeout())
                except FineTuneError as error:
                    delay = retry.after(error)
                    if delay is None:
                        raise
                time.sleep(delay)
        except FineTuneError as error:
            error.request_id = generated
            raise

    def get_job(self, job_id: str) -> job_pb2.Job:
        """The latest snapshot of a job (this service's `job-...` id or OpenAI's `ftjob-...`)."""
        return self._unary(self._stub.GetJob, job_pb2.GetJobRequest(job_id=job_id)).job

    def list_jobs(
        self,
        *,
        state: job_pb2.JobState.ValueType = job_pb2.JOB_STATE_UNSPECIFIED,
        page_size: int = 0,
    ) -> Iterator[job_pb2.Job]:
        """Every job started through the service (in `state`, when given), newest first,
        fetched `page_size` at a time (0: the server's default) as the iteration goes."""
        token = ""
        while True:
            page = self.list_jobs_page(state=state, page_size=page_size, page_token=token)
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def list_jobs_page(
        self,
        *,
        state: job_pb2.JobState.ValueType = job_pb2.JOB_STATE_UNSPECIFIED,
        page_size: int = 0,
        page_token: str = "",
    ) -> JobsPage:
        """One page of jobs, newest first: `(jobs, next_page_token)`; pass the token back for
        the next page ("" after the last)."""
        request = _shared.list_request(state, page_size, page_token)
        return _shared.jobs_page(self._unary(self._stub.ListJobs, request))

    def cancel_job(self, job_id: str) -> job_pb2.Job:
        """Cancels an unfinished job; a finished one is FAILED_PRECONDITION."""
        return self._unary(self._stub.CancelJob, job_pb2.CancelJobRequest(job_id=job_id)).job

    @overload
    def watch_job(
        self, job_id: str, *, after_sequence: int = 0, heartbeats: Literal[False] = False
    ) -> JobWatch[job_pb2.JobEvent]: ...

    @overload
    def watch_job(
        self, job_id: str, *, after_sequence: int = 0, heartbeats: Literal[True]
    ) -> JobWatch[job_pb2.JobEvent | job_pb2.Heartbeat]: ...

    def watch_job(
        self, job_id: str, *, after_sequence: int = 0, heartbeats: bool = False
    ) -> JobWatch[job_pb2.JobEvent] | JobWatch[job_pb2.JobEvent | job_pb2.Heartbeat]:
        """Follows a job: iterate for its events after `after_sequence`, in order, each once,
        until the event that puts the job in a terminal state. A dropped stream is resumed
        from the last event received. With `heartbeats=True` Heartbeat messages come too."""
        progress = _shared.WatchProgress(job_id, after_sequence)
        if heartbeats:
            everything: JobWatch[job_pb2.JobEvent | job_pb2.Heartbeat]
            everything = JobWatch(self, progress, _shared.everything)
            return everything
        return JobWatch(self, progress, _shared.events_only)

    # Serving

    def complete(
        self,
        messages: Messages,
        *,
        tier: str = "",
        model: str = "",
        system: str | None = None,
        temperature: float | None = None,
        max_output_tokens: int = 0,
        stop: Sequence[str] = (),
        user_id: str = "",
    ) -> completion_pb2.Completion:
        """One answer from a tier (`fast`, `pro`, `auto`; default `fast`) or a model."""
        request = _shared.complete_request(
            messages,
            tier=tier,
            model=model,
            system=system,
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            stop=stop,
            user_id=user_id,
        )
        return self._unary(self._stub.Complete, request).completion

    def stream_complete(
        self,
        messages: Messages,
        *,
        tier: str = "",
        model: str = "",
        system: str | None = None,
        temperature: float | None = None,
        max_output_tokens: int = 0,
        stop: Sequence[str] = (),
        user_id: str = "",
    ) -> CompletionStream:
        """Like complete(), streamed: iterate for the text deltas; then `.completion` holds the
        summary (usage, cost, model)."""
        request = _shared.complete_request(
            messages,
            tier=tier,
            model=model,
            system=system,
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            stop=stop,
            user_id=user_id,
        )
        call = self._stub.StreamComplete(
            completion_pb2.StreamCompleteRequest(request=request), metadata=self._metadata
        )
        return CompletionStream(call)

    def list_tiers(self) -> list[completion_pb2.Tier]:
        """The serving tiers (`fast`, `pro`, ...) and the model each serves."""
        return list(self._unary(self._stub.ListTiers, completion_pb2.ListTiersRequest()).tiers)

    def promote_model(
        self, tier: str, *, job_id: str | None = None, model: str | None = None
    ) -> completion_pb2.PromoteModelResponse:
        """Makes a succeeded job's model (or a named model) the one `tier` serves; the response
        holds the tier as it is now (`.tier`) and the model it served before."""
        request = _shared.promote_request(tier, job_id, model)
        return self._unary(self._stub.PromoteModel, request)

    def record_feedback(
        self, response_id: str, rating: completion_pb2.Rating.ValueType
    ) -> completion_pb2.RecordFeedbackResponse:
        """Rates a completion (`Rating.UP` or `Rating.DOWN`) by its `response_id`; the response
        names the tier and arm it counted for."""
        request = completion_pb2.RecordFeedbackRequest(response_id=response_id, rating=rating)
        return self._unary(self._stub.RecordFeedback, request)

    def get_tier_stats(self, tier: str = "") -> list[completion_pb2.TierStats]:
        """Requests, cost and ratings per tier and arm: of `tier`, or of every tier when ""."""
        request = completion_pb2.GetTierStatsRequest(tier=tier)
        return list(self._unary(self._stub.GetTierStats, request).stats)

    def _unary(
        self, method: grpc.UnaryUnaryMultiCallable[_Request, _Response], request: _Request
    ) -> _Response:
        return self._call(method, request, self._timeout)

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
    ) -> _Response:
        try:
            return method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise FineTuneError.from_rpc_error(error) from error


class JobWatch(Stoppable, Generic[_Item]):
    """An iterator over a job's events that survives dropped streams and server restarts:
    it resumes as `RetryPolicy` says (by default for 60 s without an event, waits from 0.2 s
    up to 5 s), then raises the last error.

    Attributes:
        job: the latest job snapshot seen (None before the first; the final one once
            iteration ends).
        last_sequence: the sequence of the last event received: the resume position.
        resumes: how many times the stream was re-established.

    `stop()` ends the iteration; the job goes on.
    """

    def __init__(
        self,
        client: FineTuneClient,
        progress: _shared.WatchProgress,
        select: Callable[[job_pb2.JobEvent | job_pb2.Heartbeat], _Item | None],
    ) -> None:
        self._client = client
        self._progress = progress
        self._select = select
        self._call: _ResponseStream[job_pb2.WatchJobResponse] | None = None
        self._stopped = False
        self._items = self._run()
        self.resumes = 0

    @property
    def job(self) -> job_pb2.Job | None:
        return self._progress.job

    @property
    def last_sequence(self) -> int:
        return self._progress.last_sequence

    def __iter__(self) -> JobWatch[_Item]:
        return self

    def __next__(self) -> _Item:
        return next(self._items)

    def stop(self) -> None:
        """Stops watching (iteration ends); the job itself goes on."""
        self._stopped = True
        if self._call is not None:
            self._call.cancel()

    def _run(self) -> Iterator[_Item]:
        client, progress = self._client, self._progress
        budget = _shared.ResumeBudget(client._retry, client._retry.watch_budget)
        while not self._stopped:
            failure: FineTuneError | None = None
            self._call = client._stub.WatchJob(progress.request(), metadata=client._metadata)
            try:
                for response in self._call:
                    received = progress.accept(response)
                    if isinstance(received, job_pb2.JobEvent):
                        budget.event()
                    item = self._select(received) if received is not None else None
                    if item is not None:
                        yield item
                    if progress.done:
                        return
                if progress.done:
                    return
            except grpc.RpcError as error:
                if self._stopped:
                    return
                failure = FineTuneError.from_rpc_error(error)
                failure.__cause__ = error
                if not _shared.resumable(failure):
                    raise failure from error
            finally:
                self._call.cancel()
            # Dropped, or ended before the job did: resume after a pause, within the budget.
            delay = budget.next_delay()
            if delay is None:
                raise failure or _shared.ended_early(progress)
            time.sleep(delay)
            self.resumes += 1


class CompletionStream(Stoppable):
    """The text deltas of a StreamComplete call; `completion` is set once they are all read.
    `stop()` ends it early (the server cancels the upstream request)."""

    def __init__(self, call: _ResponseStream[completion_pb2.StreamCompleteResponse]) -> None:
        self._call = call
        self._stopped = False
        self._deltas = self._run()
        self.completion: completion_pb2.Completion | None = None

    def __iter__(self) -> CompletionStream:
        return self

    def __next__(self) -> str:
        return next(self._deltas)

    def stop(self) -> None:
        """Stops the stream (iteration ends, `completion` stays None); the server cancels the
        upstream request."""
        self._stopped = True
        self._call.cancel()

    def _run(self) -> Iterator[str]:
        try:
            for response in self._call:
                if response.WhichOneof("item") == "delta":
                    yield response.delta
                elif response.WhichOneof("item") == "completion":
                    self.completion = response.completion
        except grpc.RpcError as error:
            if self._stopped:
                return
            raise FineTuneError.from_rpc_error(error) from error
        if self.completion is None and not self._stopped:
            raise FineTuneError(
                grpc.StatusCode.INTERNAL, "StreamComplete ended without a completion"
            )
