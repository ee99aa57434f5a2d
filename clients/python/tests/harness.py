"""The SDK test harness: the real FineTune server (emulator mode) behind a TCP proxy.

It is the Rust example `sdk_harness` (`cargo build --example sdk_harness`), found through
FINETUNE_HARNESS. It prints one JSON line (addresses, control URL, sample dataset), exits when
its stdin closes, and `POST {control}/cut` drops every proxied connection at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# A training job on the sample dataset lasts about 200 / TIME_SCALE seconds: long enough for a
# test to cut its stream mid-job, short enough to keep the suite quick.
TIME_SCALE = 50


@dataclass(frozen=True)
class Harness:
    address: str
    control: str
    sample_dataset: Path

    def cut(self) -> int:
        """Drops every open proxied connection; returns how many there were."""
        request = urllib.request.Request(f"{self.control}/cut", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(json.load(response)["cut"])


class HarnessError(Exception):
    pass


@contextmanager
def start_harness(log: Path) -> Iterator[Harness]:
    """Runs a fresh harness (new server, new data dir) for the duration of the block."""
    binary = Path(os.environ.get("FINETUNE_HARNESS", REPO / "target/debug/examples/sdk_harness"))
    if not binary.is_file():
        raise HarnessError(
            f"{binary} not found: run `cargo build --example sdk_harness` or set FINETUNE_HARNESS"
        )
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [str(binary), "--time-scale", str(TIME_SCALE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert process.stdin is not None and process.stdout is not None
    try:
        line = process.stdout.readline()
        if not line:
            raise HarnessError(f"the harness exited before starting; its log:\n{log.read_text()}")
        info = json.loads(line)
        yield Harness(info["address"], info["control"], Path(info["sample_dataset"]))
    finally:
        process.stdin.close()  # the harness exits when its stdin closes
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
