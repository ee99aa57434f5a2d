"""Validating datasets: inline, uploaded, and the errors of a bad one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

from fileengine.finetune import (
    DOMAIN,
    DatasetSource,
    FieldViolation,
    FineTuneClient,
    FineTuneError,
    Severity,
)
from fileengine.finetune.v1 import dataset_pb2

from harness import Harness


def test_validates_the_sample_dataset(client: FineTuneClient, harness: Harness) -> None:
    report = client.validate_dataset(harness.sample_dataset)

    assert report.format == dataset_pb2.DATASET_FORMAT_CHAT
    assert report.training.examples == 13
    assert report.training.lines == 13
    assert report.error_count == 0
    assert report.training.sha256 == hashlib.sha256(harness.sample_dataset.read_bytes()).hexdigest()
    # The README's figures: OpenAI's automatic rule picks 7 epochs for 13 examples.
    assert report.epochs == 7
    assert report.billed_tokens == 123_844
    assert all(p.severity == Severity.WARNING for p in report.problems)


def test_a_bad_line_is_reported_not_raised(client: FineTuneClient, broken_dataset: Path) -> None:
    report = client.validate_dataset(broken_dataset)

    assert report.error_count == 1
    errors = [p for p in report.problems if p.severity == Severity.ERROR]
    assert [(p.line, p.code) for p in errors] == [(3, "invalid_json")]
    assert report.training.examples == 12


def test_large_datasets_are_uploaded_in_chunks(harness: Harness) -> None:
    # A low inline limit sends the 72 KiB sample through UploadDataset in 16 KiB chunks.
    with FineTuneClient(harness.address, inline_limit=1024, upload_chunk_size=16 * 1024) as client:
        source = client.dataset_source(harness.sample_dataset)
        assert source.WhichOneof("source") == "dataset_id"
        digest = hashlib.sha256(harness.sample_dataset.read_bytes()).hexdigest()
        assert source.dataset_id == digest
        assert source.file_name == "training-data.jsonl"

        report = client.validate_dataset(harness.sample_dataset)
        assert report.training.sha256 == digest
        assert report.training.examples == 13

        again = client.upload_dataset(harness.sample_dataset)
        assert again.dataset_id == digest
        assert again.size_bytes == harness.sample_dataset.stat().st_size
        assert again.already_present


def test_a_dataset_over_8_mib_goes_through_upload(
    client: FineTuneClient, harness: Harness, tmp_path: Path
) -> None:
    big = tmp_path / "big.jsonl"
    big.write_bytes(harness.sample_dataset.read_bytes() * 120)  # 1560 examples, 8.5 MiB
    assert big.stat().st_size > 8 * 1024 * 1024

    source = client.dataset_source(big)
    assert source.WhichOneof("source") == "dataset_id"
    assert source.dataset_id == hashlib.sha256(big.read_bytes()).hexdigest()

    report = client.validate_dataset(big, max_problems=10)
    assert report.training.examples == 1560
    assert report.error_count == 0
    assert report.training.size_bytes == big.stat().st_size


def test_training_on_a_bad_dataset_raises_a_typed_error(
    client: FineTuneClient, broken_dataset: Path
) -> None:
    with pytest.raises(FineTuneError) as raised:
        client.start_training(broken_dataset)

    error = raised.value
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "DATASET_INVALID"
    assert error.domain == DOMAIN
    assert [(v.type, v.subject) for v in error.precondition_violations] == [
        ("invalid_json", "training:3")
    ]
    assert "1 error" in error.message


def test_a_missing_field_carries_bad_request_violations(client: FineTuneClient) -> None:
    with pytest.raises(FineTuneError) as raised:
        client.validate_dataset(DatasetSource())  # neither content nor dataset_id

    error = raised.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert error.field_violations == (
        FieldViolation("training", "set either content or dataset_id"),
    )


def test_an_unknown_dataset_id_is_not_found(client: FineTuneClient) -> None:
    with pytest.raises(FineTuneError) as raised:
        client.validate_dataset(DatasetSource(dataset_id="0" * 64))

    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert raised.value.reason == "DATASET_NOT_FOUND"
