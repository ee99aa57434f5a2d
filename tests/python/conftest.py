"""Shared by the SDK tests: starting `finetune emulator` and calling its admin endpoints."""

import contextlib
import json
import os
import re
import subprocess
import threading
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(
    r"^finetune emulator: listening on (http://\S+)/v1 "
    r"\(an emulator of OpenAI's API: no real training happens\)$"
)


@contextlib.contextmanager
def running_emulator(time_scale):
    """Starts `finetune emulator` (FINETUNE_BIN, default target/debug/finetune) on a free
    port and yields its root URL (http://host:port, without /v1)."""
    binary = os.environ.get("FINETUNE_BIN", str(ROOT / "target" / "debug" / "finetune"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINETUNE_EMULATOR")}
    proc = subprocess.Popen(
        [binary, "emulator", "--addr", "127.0.0.1:0", "--time-scale", str(time_scale)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    # A binary that never prints would block readline forever.
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline().rstrip("\n")
    finally:
        watchdog.cancel()
    match = LINE.match(line)
    assert match, f"unexpected first line from {binary}: {line!r}"
    try:
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def admin(root, path, body=None, method=None):
    """Calls the emulator's /_emulator admin endpoints; `root` has no /v1."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        root + path,
        data=data,
        method=method or ("POST" if data else "GET"),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
