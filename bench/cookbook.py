#!/usr/bin/env python3
"""The OpenAI cookbook's data-preparation method ("Data preparation and analysis for chat
model fine-tuning"), as a baseline for the validation benchmark.

    TIKTOKEN_CACHE_DIR=... python bench/cookbook.py FILE [--stream]

Faithful to the cookbook's token counting:

    dataset = [json.loads(line) for line in f]
    num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
        3 per message, + len(encoding.encode(value)) for every string value of the message,
        + 1 for `name`, + 3 per example
    num_assistant_tokens_from_messages(messages)

with encoding o200k_base (the encoding of gpt-4o and newer; the cookbook predates it and
uses cl100k_base). Like the cookbook, the whole dataset is loaded into a list before
counting; `--stream` counts line by line instead (lower memory, same tokens). The cookbook's
format-error checks are not run (they are cheap and would only slow this baseline down).

Prints one JSON object: examples, total_tokens, assistant_tokens, seconds (wall time of the
whole method including loading the encoding, as `/usr/bin/time` measures the validator),
mb_per_s (file size, 1 MB = 1,000,000 bytes), examples_per_s, peak_rss_mb (getrusage),
cpu_seconds (user + system over the same span), others_load_pct (share of all CPUs busy
with other processes meanwhile, from /proc/stat).

tiktoken downloads its BPE file at run time; offline, TIKTOKEN_CACHE_DIR must hold it
under the sha1 of its URL. If the variable is unset, this script seeds bench/.venv/
tiktoken-cache from the copy tiktoken-rs ships in ~/.cargo/registry and uses it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import resource
import shutil
import sys
import time

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


def seed_tiktoken_cache(cache_dir: str) -> str:
    """Copies tiktoken-rs's o200k_base.tiktoken into `cache_dir` under tiktoken's cache key
    (sha1 hex of the download URL, see tiktoken/load.py read_file_cached)."""
    os.makedirs(cache_dir, exist_ok=True)
    dest = os.path.join(cache_dir, hashlib.sha1(O200K_URL.encode()).hexdigest())
    if os.path.exists(dest):
        return dest
    cargo_home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    found = sorted(glob.glob(os.path.join(cargo_home, "registry/src/*/tiktoken-rs-*/assets/o200k_base.tiktoken")))
    if not found:
        sys.exit("cookbook.py: no o200k_base.tiktoken from tiktoken-rs in ~/.cargo/registry; run cargo build first")
    with open(found[-1], "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != O200K_SHA256:
        sys.exit(f"cookbook.py: {found[-1]} does not have tiktoken's expected sha256")
    tmp = dest + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    shutil.move(tmp, dest)
    return dest


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat's `cpu` line (0, 0 if unreadable)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return sum(v) - v[3] - v[4], sum(v)


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    stream = "--stream" in sys.argv[1:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    data_path = args[0]
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        here = os.path.dirname(os.path.abspath(__file__))
        os.environ["TIKTOKEN_CACHE_DIR"] = os.path.join(here, ".venv", "tiktoken-cache")
        seed_tiktoken_cache(os.environ["TIKTOKEN_CACHE_DIR"])

    started = time.perf_counter()
    cpu_started = time.process_time()
    machine_started = machine_ticks()
    import tiktoken  # noqa: E402  (imported after the cache directory is set)

    encoding = tiktoken.get_encoding("o200k_base")

    # ---- the cookbook's functions, verbatim but for the encoding ----
    def num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
        num_tokens = 0
        for message in messages:
            num_tokens += tokens_per_message
            for key, value in message.items():
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += tokens_per_name
        num_tokens += 3
        return num_tokens

    def num_assistant_tokens_from_messages(messages):
        num_tokens = 0
        for message in messages:
            if message["role"] == "assistant":
                num_tokens += len(encoding.encode(message["content"]))
        return num_tokens

    n_messages = []
    convo_lens = []
    assistant_message_lens = []

    def count(ex):
        messages = ex["messages"]
        n_messages.append(len(messages))
        convo_lens.append(num_tokens_from_messages(messages))
        assistant_message_lens.append(num_assistant_tokens_from_messages(messages))

    with open(data_path, "r", encoding="utf-8") as f:
        if stream:
            for line in f:
                count(json.loads(line))
        else:
            dataset = [json.loads(line) for line in f]
            for ex in dataset:
                count(ex)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    machine_ended = machine_ticks()
    ticks = machine_ended[1] - machine_started[1]
    hz = os.sysconf("SC_CLK_TCK")
    others = (machine_ended[0] - machine_started[0]) - cpu_seconds * hz
    others_load_pct = min(100.0, max(0.0, 100.0 * others / ticks)) if ticks > 0 else 0.0

    size = os.path.getsize(data_path)
    examples = len(convo_lens)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({
        "method": "cookbook",
        "examples": examples,
        "total_tokens": sum(convo_lens),
        "assistant_tokens": sum(assistant_message_lens),
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / 1e6 / seconds, 3),
        "examples_per_s": round(examples / seconds, 3),
        "peak_rss_mb": round(peak_kb * 1024 / 1e6, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "others_load_pct": round(others_load_pct, 3),
        "file_bytes": size,
        "stream": stream,
        "tiktoken": getattr(tiktoken, "__version__", "?"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
