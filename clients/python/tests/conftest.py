"""Fixtures: one harness (real server, emulator mode) for the whole session, a client of it,
a job trained to success, and a broken dataset; and, for the tests that need it, a second
harness whose server requires tokens and speaks TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fileengine.finetune import FineTuneClient, Job

from harness import Harness, broken_copy, start_harness, train_to_success


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with start_harness(tmp_path_factory.mktemp("harness") / "harness.log") as harness:
        yield harness


@pytest.fixture(scope="session")
def secure_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The harness with `--secure`: tokens required, TLS (trust `ca_file`)."""
    log = tmp_path_factory.mktemp("secure-harness") / "harness.log"
    with start_harness(log, secure=True) as harness:
        yield harness


@pytest.fixture(scope="session")
def client(harness: Harness) -> Iterator[FineTuneClient]:
    with FineTuneClient(harness.address, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def succeeded_job(client: FineTuneClient, harness: Harness) -> Job:
    """A job on the sample dataset, watched to its end (it must succeed in the emulator)."""
    return train_to_success(client, harness.sample_dataset, "sdk-test")


@pytest.fixture
def broken_dataset(harness: Harness, tmp_path: Path) -> Path:
    """The sample dataset with its third line replaced by text that is not JSON."""
    return broken_copy(harness.sample_dataset, tmp_path)
