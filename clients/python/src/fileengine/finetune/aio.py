"""AsyncFineTuneClient: the asyncio (grpc.aio) twin of FineTuneClient. Every method of the
sync client is here with the same arguments, results and FineTuneError, awaited; list_jobs,
watch_job and stream_complete are async iterators. For what the wrapper does not cover use
`client.stub` with `metadata=client.metadata`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Generic, Literal, TypeVar, overload

import grpc
import grpc.aio

from . import _shared
from ._shared import Dataset, JobsPage, Messages, RetryPolicy, Stoppable
from .errors import FineTuneError
from .v1 import completion_pb2, dataset_pb2, job_pb2, service_pb2_grpc

__all__ = ["AsyncCompletionStream", "AsyncFineTuneClient", "AsyncJobWatch"]

_Item = TypeVar("_Item")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class AsyncFineTuneClient:
    """A connection to the FineTune service for asyncio code; see FineTuneClient for the
    arguments. Use it as an async context manager, or await close()."""

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
            grpc.aio.secure_channel(address, credentials, opts)
            if credentials is not None
            else grpc.aio.insecure_channel(address, opts)
        )
        # One generated class serves both; its typing names the asyncio flavour.
        self._stub = service_pb2_grpc.FineTuneServiceStub(self._channel)
        self._metadata = _shared.call_metadata(token)
        self._timeout = timeout
        self._retry = retry
        self._inline_limit = inline_limit
        self._chunk_size = upload_chunk_size

    async def __aenter__(self) -> AsyncFineTuneClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    @property
    def stub(self) -> service_pb2_grpc.FineTuneServiceAsyncStub:
        return self._stub

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def validate_dataset(
        self,
        training: Dataset,
        *,
        validation: Dataset | None = None,
        model: str = "",
        epochs: int | None = None,
        max_problems: int = 0,
        min_examples_per_intent: int = 0,
    ) -> dataset_pb2.ValidationReport:
        request = _shared.validate_request(
            await self.dataset_source(training),
            await self.dataset_source(validation) if validation is not None else None,
            model=model,
            epochs=epochs,
            max_problems=max_problems,
            min_examples_per_intent=min_examples_per_intent,
        )
        return (await self._unary(self._stub.ValidateDataset, request)).report

    async def upload_dataset(
        self, path: str | os.PathLike[str]
    ) -> dataset_pb2.UploadDatasetResponse:
        # grpc.aio reads a plain iterator of requests too; file reads are short (1 MiB).
        requests = _shared.upload_requests(Path(path), self._chunk_size)
        try:
            return await self._stub.UploadDataset(
                requests, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            raise FineTuneError.from_rpc_error(error) from error

    async def dataset_source(self, dataset: Dataset) -> dataset_pb2.DatasetSource:
        if isinstance(dataset, dataset_pb2.DatasetSource):
            return dataset
        path = Path(dataset)
        if path.stat().st_size <= self._inline_limit:
            return _shared.inline_source(path)
        return _shared.uploaded_source(path, (await self.upload_dataset(path)).dataset_id)

    async def start_training(
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
        """See FineTuneClient.start_training: the same retries, and every FineTuneError
        carries the request id when it was generated."""
        request_id, generated = _shared.generated_request_id(request_id)
        try:
            request = _shared.training_request(
                await self.dataset_source(training),
                await self.dataset_source(validation) if validation is not None else None,
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
                    return await self._call(self._stub.StartTraining, request, retry.timeout())
                except FineTuneError as error:
                    delay = retry.after(error)
                    if delay is None:
                        raise
                await asyncio.sleep(delay)
        except FineTuneError as error:
            error.request_id = generated
            raise

    async def get_job(self, job_id: str) -> job_pb2.Job:
        return (await self._unary(self._stub.GetJob, job_pb2.GetJobRequest(job_id=job_id))).job

    async def list_jobs(
        self,
        *,
        state: job_pb2.JobState.ValueType = job_pb2.JOB_STATE_UNSPECIFIED,
        page_size: int = 0,
    ) -> AsyncIterator[job_pb2.Job]:
        """`async for job in client.list_jobs()`: see FineTuneClient.list_jobs."""
        token = ""
        while True:
            page = await self.list_jobs_page(state=state, page_size=page_size, page_token=token)
            for job in page.jobs:
                yield job
            token = page.next_page_token
            if not token:
                return

    async def list_jobs_page(
        self,
        *,
        state: job_pb2.JobState.ValueType = job_pb2.JOB_STATE_UNSPECIFIED,
        page_size: int = 0,
        page_token: str = "",
    ) -> JobsPage:
        request = _shared.list_request(state, page_size, page_token)
        return _shared.jobs_page(await self._unary(self._stub.ListJobs, request))

    async def cancel_job(self, job_id: str) -> job_pb2.Job:
        request = job_pb2.CancelJobRequest(job_id=job_id)
        return (await self._unary(self._stub.CancelJob, request)).job

    @overload
    def watch_job(
        self, job_id: str, *, after_sequence: int = 0, heartbeats: Literal[False] = False
    ) -> AsyncJobWatch[job_pb2.JobEvent]: ...

    @overload
    def watch_job(
        self, job_id: str, *, after_sequence: int = 0, heartbeats: Literal[True]
    ) -> AsyncJobWatch[job_pb2.JobEvent | job_pb2.Heartbeat]: ...

    def watch_job(
        self, job_id: str, *, after_sequence: int = 0, heartbeats: bool = False
    ) -> AsyncJobWatch[job_pb2.JobEvent] | AsyncJobWatch[job_pb2.JobEvent | job_pb2.Heartbeat]:
        """`async for event in client.watch_job(job_id)`: see FineTuneClient.watch_job."""
        progress = _shared.WatchProgress(job_id, after_sequence)
        if heartbeats:
            everything: AsyncJobWatch[job_pb2.JobEvent | job_pb2.Heartbeat]
            everything = AsyncJobWatch(self, progress, _shared.everything)
            return everything
        return AsyncJobWatch(self, progress, _shared.events_only)

    async def complete(
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
        return (await self._unary(self._stub.Complete, request)).completion

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
    ) -> AsyncCompletionStream:
        """`async for delta in client.stream_complete(...)`, then `.completion`."""
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
        return AsyncCompletionStream(call)

    async def list_tiers(self) -> list[completion_pb2.Tier]:
        response = await self._unary(self._stub.ListTiers, completion_pb2.ListTiersRequest())
        return list(response.tiers)

    async def promote_model(
        self, tier: str, *, job_id: str | None = None, model: str | None = None
    ) -> completion_pb2.PromoteModelResponse:
        request = _shared.promote_request(tier, job_id, model)
        return await self._unary(self._stub.PromoteModel, request)

    async def record_feedback(
        self, response_id: str, rating: completion_pb2.Rating.ValueType
    ) -> completion_pb2.RecordFeedbackResponse:
        request = completion_pb2.RecordFeedbackRequest(response_id=response_id, rating=rating)
        return await self._unary(self._stub.RecordFeedback, request)

    async def get_tier_stats(self, tier: str = "") -> list[completion_pb2.TierStats]:
        request = completion_pb2.GetTierStatsRequest(tier=tier)
        return list((await self._unary(self._stub.GetTierStats, request)).stats)

    async def _unary(
        self, method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response], request: _Request
    ) -> _Response:
        return await self._call(method, request, self._timeout)

    async def _call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
    ) -> _Response:
        try:
            return await method(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise FineTuneError.from_rpc_error(error) from error


class AsyncJobWatch(Stoppable, Generic[_Item]):
    """The async iterator behind AsyncFineTuneClient.watch_job; see JobWatch: `.job`,
    `.resumes`, `.last_sequence`, `.stop()`."""

    def __init__(
        self,
        client: AsyncFineTuneClient,
        progress: _shared.WatchProgress,
        select: Callable[[job_pb2.JobEvent | job_pb2.Heartbeat], _Item | None],
    ) -> None:
        self._client = client
        self._progress = progress
        self._select = select
        self._call: (
            grpc.aio.UnaryStreamCall[job_pb2.WatchJobRequest, job_pb2.WatchJobResponse] | None
        ) = None
        self._stopped = False
        self._items = self._run()
        self.resumes = 0

    @property
    def job(self) -> job_pb2.Job | None:
        return self._progress.job

    @property
    def last_sequence(self) -> int:
        return self._progress.last_sequence

    def __aiter__(self) -> AsyncJobWatch[_Item]:
        return self

    async def __anext__(self) -> _Item:
        return await anext(self._items)

    def stop(self) -> None:
        """Stops watching (iteration ends); the job itself goes on."""
        self._stopped = True
        if self._call is not None:
            self._call.cancel()

    async def _run(self) -> AsyncIterator[_Item]:
        client, progress = self._client, self._progress
        budget = _shared.ResumeBudget(client._retry, client._retry.watch_budget)
        while not self._stopped:
            failure: FineTuneError | None = None
            call = client._stub.WatchJob(progress.request(), metadata=client._metadata)
            self._call = call
            try:
                async for response in call:
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
            except grpc.aio.AioRpcError as error:
                if self._stopped:
                    return
                failure = FineTuneError.from_rpc_error(error)
                failure.__cause__ = error
                if not _shared.resumable(failure):
                    raise failure from error
            except asyncio.CancelledError:
                if self._stopped:
                    return
                raise
            finally:
                call.cancel()
            delay = budget.next_delay()
            if delay is None:
                raise failure or _shared.ended_early(progress)
            await asyncio.sleep(delay)
            self.resumes += 1


class AsyncCompletionStream(Stoppable):
    """The async iterator behind AsyncFineTuneClient.stream_complete; see CompletionStream:
    text deltas, then `.completion`; `.stop()`."""

    def __init__(
        self,
        call: grpc.aio.UnaryStreamCall[
            completion_pb2.StreamCompleteRequest, completion_pb2.StreamCompleteResponse
        ],
    ) -> None:
        self._call = call
        self._stopped = False
        self._deltas = self._run()
        self.completion: completion_pb2.Completion | None = None

    def __aiter__(self) -> AsyncCompletionStream:
        return self

    async def __anext__(self) -> str:
        return await anext(self._deltas)

    def stop(self) -> None:
        """Stops the stream (iteration ends, `completion` stays None); the server cancels the
        upstream request."""
        self._stopped = True
        self._call.cancel()

    async def _run(self) -> AsyncIterator[str]:
        try:
            async for response in self._call:
                if response.WhichOneof("item") == "delta":
                    yield response.delta
                elif response.WhichOneof("item") == "completion":
                    self.completion = response.completion
        except grpc.aio.AioRpcError as error:
            if self._stopped:
                return
            raise FineTuneError.from_rpc_error(error) from error
        except asyncio.CancelledError:
            # What iterating a grpc.aio call that stop() cancelled raises.
            if self._stopped:
                return
            raise
        if self.completion is None and not self._stopped:
            raise FineTuneError(
                grpc.StatusCode.INTERNAL, "StreamComplete ended without a completion"
            )
