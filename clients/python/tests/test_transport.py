"""Client behaviour the emulator harness cannot show: the bearer token on every call, TLS with
a CA file, retries that keep the idempotency key, a watch resumed after a stream that ended
early, and RetryInfo decoding.

The real server neither checks tokens nor serves TLS in the harness, and cannot be made to fail
a call with UNAVAILABLE or RESOURCE_EXHAUSTED on demand, so these tests talk to a small
in-process stand-in built on the generated servicer. It only records what the client sends;
the service's behaviour is tested against the real server in the other files.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from grpc_status import rpc_status

from fileengine.finetune import DOMAIN, FineTuneClient, FineTuneError, JobState, RetryPolicy
from fileengine.finetune.v1 import completion_pb2, job_pb2, service_pb2_grpc

FAST_RETRY = RetryPolicy(attempts=3, initial_backoff=0.01)


class StandIn(service_pb2_grpc.FineTuneServiceServicer):
    """Implements four RPCs; the base class answers UNIMPLEMENTED for the rest (its typing
    marks them abstract, hence the `type: ignore[abstract]` where it is made)."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.request_ids: list[str] = []
        self.watch_positions: list[int] = []
        self.unavailable_starts = 1
        self._lock = threading.Lock()

    def _record(self, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})

    def ListTiers(
        self, request: completion_pb2.ListTiersRequest, context: grpc.ServicerContext
    ) -> completion_pb2.ListTiersResponse:
        self._record(context)
        return completion_pb2.ListTiersResponse(tiers=[completion_pb2.Tier(name="fast")])

    def StartTraining(
        self, request: job_pb2.StartTrainingRequest, context: grpc.ServicerContext
    ) -> job_pb2.StartTrainingResponse:
        self._record(context)
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
        # would; the third event finishes the job.
        self._record(context)
        self.watch_positions.append(request.after_sequence)
        running = job_pb2.Job(id=request.job_id, state=JobState.JOB_STATE_RUNNING)
        yield job_pb2.WatchJobResponse(snapshot=running)
        sequence = request.after_sequence + 1
        done = sequence == 3
        event = job_pb2.JobEvent(
            job_id=request.job_id,
            sequence=sequence,
            kind=job_pb2.JOB_EVENT_KIND_STATE_CHANGED if done else job_pb2.JOB_EVENT_KIND_MESSAGE,
            job=job_pb2.Job(id=request.job_id, state=JobState.JOB_STATE_SUCCEEDED)
            if done
            else None,
        )
        yield job_pb2.WatchJobResponse(event=event)
        yield job_pb2.WatchJobResponse(heartbeat=job_pb2.Heartbeat(last_sequence=sequence))


def serve(
    stand_in: StandIn, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_FineTuneServiceServicer_to_server(stand_in, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, int]]:
    servicer = StandIn()  # type: ignore[abstract]
    server, port = serve(servicer)
    yield servicer, port
    server.stop(grace=None)


def test_the_bearer_token_goes_with_every_call(stand_in: tuple[StandIn, int]) -> None:
    servicer, port = stand_in
    with FineTuneClient(f"127.0.0.1:{port}", token="s3cret", retry=FAST_RETRY) as client:
        client.list_tiers()
        client.start_training(Path(__file__))  # any file: the stand-in does not validate
        list(client.watch_job("job-1"))
    assert servicer.metadata
    assert all(m.get("authorization") == "Bearer s3cret" for m in servicer.metadata)

    with FineTuneClient(f"127.0.0.1:{port}") as client:
        client.list_tiers()
    assert "authorization" not in servicer.metadata[-1]


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
    assert watch.job is not None and watch.job.state == JobState.JOB_STATE_SUCCEEDED


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
    assert error.retry_delay == 2.0
    assert len(error.details) == 2


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_with_a_ca_file(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    servicer = StandIn()  # type: ignore[abstract]
    server, port = serve(servicer, credentials)
    try:
        with FineTuneClient(f"127.0.0.1:{port}", ca_file=cert, token="t", timeout=10) as client:
            assert [t.name for t in client.list_tiers()] == ["fast"]
        assert servicer.metadata[-1]["authorization"] == "Bearer t"

        # Plaintext, or TLS without trusting the certificate, cannot talk to it.
        for kwargs in ({}, {"tls": True}):
            with FineTuneClient(f"127.0.0.1:{port}", timeout=10, **kwargs) as client:  # type: ignore[arg-type]
                with pytest.raises(FineTuneError) as raised:
                    client.list_tiers()
                assert raised.value.code == grpc.StatusCode.UNAVAILABLE
                assert raised.value.reason is None
    finally:
        server.stop(grace=None)
