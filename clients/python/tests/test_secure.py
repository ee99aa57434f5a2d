"""The bearer token and TLS against the real server: the harness started with `--secure`, where
every call needs a token with the method's role (read, train, complete) and the server speaks
TLS only, with a certificate signed by the run's CA (`ca_file`), through the cuttable proxy."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from fileengine.finetune import (
    DOMAIN,
    AsyncFineTuneClient,
    FineTuneClient,
    FineTuneError,
    JobEvent,
    JobState,
)

from harness import Harness, assert_complete_history
from prices import assert_cost


@pytest.fixture(scope="module")
def secure_client(secure_harness: Harness) -> Iterator[FineTuneClient]:
    """TLS trusting the run's CA, with the token that has every role."""
    assert secure_harness.tls and secure_harness.ca_file and secure_harness.token
    with FineTuneClient(
        secure_harness.address,
        ca_file=secure_harness.ca_file,
        token=secure_harness.token,
        timeout=60,
    ) as client:
        yield client


def expect_error(code: grpc.StatusCode, call: Any, *args: Any, **kwargs: Any) -> FineTuneError:
    with pytest.raises(FineTuneError) as raised:
        call(*args, **kwargs)
    assert raised.value.code == code, raised.value
    return raised.value


def test_tls_and_the_token_on_every_kind_of_call(
    secure_harness: Harness, secure_client: FineTuneClient
) -> None:
    # Unary (read role).
    report = secure_client.validate_dataset(secure_harness.sample_dataset)
    assert report.training.examples == 13 and report.error_count == 0

    # Client streaming: a low inline limit sends the dataset through UploadDataset.
    assert secure_harness.ca_file and secure_harness.token
    with FineTuneClient(
        secure_harness.address,
        ca_file=secure_harness.ca_file,
        token=secure_harness.token,
        timeout=60,
        inline_limit=1024,
        upload_chunk_size=16 * 1024,
    ) as uploading:
        source = uploading.dataset_source(secure_harness.sample_dataset)
        assert source.WhichOneof("source") == "dataset_id"
        assert uploading.validate_dataset(source).training.examples == 13

    # The complete role, unary and server streaming.
    completion = secure_client.complete("Hello", tier="pro")
    assert completion.text
    assert_cost(completion, "claude-sonnet-5-5")
    stream = secure_client.stream_complete("Hello", tier="pro")
    deltas = list(stream)
    assert stream.completion is not None and stream.completion.text == "".join(deltas) != ""
    assert_cost(stream.completion, "claude-sonnet-5-5")
    assert "pro" in [t.name for t in secure_client.list_tiers()]


def test_watch_over_tls_resumes_after_the_connection_is_cut(
    secure_harness: Harness, secure_client: FineTuneClient
) -> None:
    # The resumed WatchJob is a new call on a new TLS connection: without the token again it
    # would end in UNAUTHENTICATED, without TLS in UNAVAILABLE, and the watch would raise.
    job = secure_client.start_training(secure_harness.sample_dataset, suffix="secure-cut").job
    watch = secure_client.watch_job(job.id)
    events: list[JobEvent] = []
    cut = 0
    for event in watch:
        events.append(event)
        if len(events) == 1:
            cut = secure_harness.cut()

    assert cut >= 1, "the watch stream should have been open when the harness cut it"
    assert watch.resumes >= 1
    assert len(events) > 50
    assert_complete_history(events, JobState.SUCCEEDED)
    assert watch.job is not None and watch.job.state == JobState.SUCCEEDED
    assert secure_client.get_job(job.id).state == JobState.SUCCEEDED


def test_no_token_or_a_wrong_token_is_unauthenticated(secure_harness: Harness) -> None:
    dataset = secure_harness.sample_dataset
    with FineTuneClient(secure_harness.address, ca_file=secure_harness.ca_file, timeout=30) as c:
        error = expect_error(grpc.StatusCode.UNAUTHENTICATED, c.validate_dataset, dataset)
        assert "needs a token" in error.message  # no authorization metadata was sent
        assert (error.reason, error.domain) == ("TOKEN_MISSING", DOMAIN)
        assert error.metadata == {"method": "ValidateDataset", "role": "read"}
        # A stream is refused the same way, and not resumed as if the connection had dropped.
        error = expect_error(grpc.StatusCode.UNAUTHENTICATED, lambda: list(c.watch_job("job-1")))
        assert error.reason == "TOKEN_MISSING"

    with FineTuneClient(
        secure_harness.address, ca_file=secure_harness.ca_file, token="ft_wrong", timeout=30
    ) as c:
        error = expect_error(grpc.StatusCode.UNAUTHENTICATED, c.validate_dataset, dataset)
        assert error.reason == "TOKEN_INVALID"
        assert "ft_wrong" not in str(error) and "ft_wrong" not in error.metadata.values()


def test_a_read_token_reads_but_cannot_train_or_complete(
    secure_harness: Harness, secure_client: FineTuneClient
) -> None:
    with FineTuneClient(
        secure_harness.address,
        ca_file=secure_harness.ca_file,
        token=secure_harness.read_token,
        timeout=30,
    ) as reader:
        report = reader.validate_dataset(secure_harness.sample_dataset)
        assert report.training.examples == 13 and report.error_count == 0
        assert [j.id for j in reader.list_jobs()] == [j.id for j in secure_client.list_jobs()]

        error = expect_error(
            grpc.StatusCode.PERMISSION_DENIED, reader.start_training, secure_harness.sample_dataset
        )
        assert "train role" in error.message and "StartTraining" in error.message
        assert (error.reason, error.domain) == ("ROLE_MISSING", DOMAIN)
        assert error.metadata == {"method": "StartTraining", "role": "train"}
        assert secure_harness.read_token and secure_harness.read_token not in str(error)

        error = expect_error(grpc.StatusCode.PERMISSION_DENIED, reader.complete, "Hi", tier="pro")
        assert "complete role" in error.message
        assert error.metadata == {"method": "Complete", "role": "complete"}


def test_plaintext_or_an_untrusted_certificate_cannot_connect(secure_harness: Harness) -> None:
    attempts: list[dict[str, Any]] = [{}, {"tls": True}]  # plaintext; TLS with default roots
    for kwargs in attempts:
        with FineTuneClient(
            secure_harness.address, token=secure_harness.token, timeout=10, **kwargs
        ) as client:
            error = expect_error(
                grpc.StatusCode.UNAVAILABLE, client.validate_dataset, secure_harness.sample_dataset
            )
            assert error.reason == "", kwargs


def test_asyncio_client_over_tls_with_a_token(secure_harness: Harness) -> None:
    async def pipeline() -> None:
        async with AsyncFineTuneClient(
            secure_harness.address,
            ca_file=secure_harness.ca_file,
            token=secure_harness.token,
            timeout=60,
        ) as client:
            report = await client.validate_dataset(secure_harness.sample_dataset)
            assert report.training.examples == 13
            started = await client.start_training(secure_harness.sample_dataset, suffix="aio-tls")
            events = [e async for e in client.watch_job(started.job.id)]
            assert_complete_history(events, JobState.SUCCEEDED)
            completion = await client.complete("Hello", tier="pro")
            assert completion.text
            assert_cost(completion, "claude-sonnet-5-5")

        async with AsyncFineTuneClient(
            secure_harness.address, ca_file=secure_harness.ca_file, timeout=30
        ) as anonymous:
            with pytest.raises(FineTuneError) as raised:
                await anonymous.validate_dataset(secure_harness.sample_dataset)
            assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(pipeline())
