"""The SDK test harness: the real FineTune server on the emulator, behind a TCP proxy.

It is the Rust example `sdk_harness` (`cargo build --example sdk_harness`), found through
FINETUNE_HARNESS. It prints one JSON line (addresses, control URL, sample dataset) and exits
when its stdin closes. `POST {control}/cut` drops every proxied connection at once;
`POST {control}/restart` stops the server (open connections cut, new ones refused) and starts
it again on the same address and data after `down_ms`. The control URL also injects the
emulator's faults (`POST /faults`), counts its requests (`GET /stats`) and lists the jobs the
emulated OpenAI holds by request id (`GET /upstream_jobs`).

With `secure=True` it runs with `--secure`: the server requires bearer tokens and speaks TLS
(through the same cuttable proxy), with a certificate for `localhost` and `127.0.0.1` signed by
a CA made for the run; the line then also carries that CA's PEM file, a token with every role
and a token with the `read` role only.
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
from typing import Any

from fileengine.finetune import FineTuneClient, Job, JobEvent, JobEventKind, JobState

REPO = Path(__file__).resolve().parents[3]
# A training job on the sample dataset lasts about 200 / TIME_SCALE seconds: long enough for a
# test to cut its stream mid-job, short enough to keep the suite quick.
TIME_SCALE = 50


@dataclass(frozen=True)
class Harness:
    address: str
    control: str
    sample_dataset: Path
    tls: bool = False
    """Whether the server speaks TLS (and requires tokens): started with `--secure`."""
    ca_file: Path | None = None
    """The PEM of the CA that signed the server's certificate (secure only)."""
    token: str | None = None
    """A token with every role: read, train, complete (secure only)."""
    read_token: str | None = None
    """A token with the read role only (secure only)."""

    def cut(self) -> int:
        """Drops every open proxied connection; returns how many there were."""
        return int(self._control("POST", "/cut")["cut"])

    def restart(self, down_ms: int) -> None:
        """Stops the server and starts it again `down_ms` later; returns once it is down."""
        answer = self._control("POST", "/restart", {"down_ms": down_ms})
        if answer != {"stopped": True, "down_ms": down_ms}:
            raise HarnessError(f"the harness did not restart the server: {answer!r}")

    def up(self) -> bool:
        """Whether the server is running (false while a restart keeps it down)."""
        return bool(self._control("GET", "/up")["up"])

    def inject(self, route: str, kind: str, times: int = 1, **fields: Any) -> None:
        """Fails the next `times` emulator requests to `route` (`METHOD /v1/path`) with the
        fault `kind` (`malformed_json`, `lost_response`, `latency` with `ms`, ...)."""
        self._control("POST", "/faults", {"route": route, "times": times, "kind": kind, **fields})

    def clear_faults(self) -> None:
        self._control("DELETE", "/faults")

    def requests_to(self, route: str) -> int:
        """How many requests the emulator has had for `route`."""
        return int(self._control("GET", "/stats")["by_route"].get(route, 0))

    def upstream_jobs(self, request_id: str) -> list[str]:
        """The ids of the jobs the emulated OpenAI holds for `request_id`."""
        return list(self._control("GET", "/upstream_jobs")["by_request"].get(request_id, []))

    def _control(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.control}{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)


class HarnessError(Exception):
    pass


@contextmanager
def start_harness(log: Path, *, secure: bool = False) -> Iterator[Harness]:
    """Runs a fresh harness (new server, new data dir) for the duration of the block; with
    `secure`, one that requires tokens and speaks TLS."""
    binary = Path(os.environ.get("FINETUNE_HARNESS", REPO / "target/debug/examples/sdk_harness"))
    if not binary.is_file():
        raise HarnessError(
            f"{binary} not found: run `cargo build --example sdk_harness` or set FINETUNE_HARNESS"
        )
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [str(binary), "--time-scale", str(TIME_SCALE), *(["--secure"] if secure else [])],
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
        tls = bool(info.get("tls", False))
        if tls != secure:
            raise HarnessError(f"asked for secure={secure}, the harness says tls={tls}: {line!r}")
        yield Harness(
            info["address"],
            info["control"],
            Path(info["sample_dataset"]),
            tls=tls,
            ca_file=Path(info["ca_file"]) if "ca_file" in info else None,
            token=info.get("token"),
            read_token=info.get("read_token"),
        )
    finally:
        process.stdin.close()  # the harness exits when its stdin closes
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def train_to_success(client: FineTuneClient, dataset: Path, suffix: str) -> Job:
    """A job on `dataset`, watched to its end, where it must have succeeded."""
    job = client.start_training(dataset, suffix=suffix).job
    watch = client.watch_job(job.id)
    for _ in watch:
        pass
    assert watch.job is not None and watch.job.state == JobState.SUCCEEDED
    return watch.job


def broken_copy(dataset: Path, directory: Path) -> Path:
    """`dataset` with its third line replaced by text that is not JSON, in `directory`."""
    lines = dataset.read_bytes().splitlines(keepends=True)
    lines[2] = b"this line is not JSON\n"
    path = directory / "broken.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def assert_complete_history(events: list[JobEvent], final_state: int) -> None:
    """What a watch through the harness must deliver: every event from the first, once, in
    order, ending with the state change to `final_state`."""
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    last = events[-1]
    assert last.kind == JobEventKind.STATE_CHANGED
    assert last.job.state == final_state
    assert not any(
        e.kind == JobEventKind.STATE_CHANGED and e.job.state == final_state for e in events[:-1]
    )
