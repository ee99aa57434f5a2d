#!/usr/bin/env python3
"""The peer benchmark's driver: LiteLLM's proxy and FineTune's gRPC Complete side by side,
in front of one emulator process. bench/peer/run.sh installs the tools and calls this; see
bench/README.md ("A peer, side by side") for what it measures and how to read it.

Standard library only: it runs under the system python3, LiteLLM under its own venv.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ROUTE = "POST /v1/chat/completions"
# Placeholder credentials: every upstream here is the emulator, which takes any bearer key.
UPSTREAM_KEY = "sk-peer-bench-not-a-real-key"
LITELLM_MASTER_KEY = "sk-peer-bench-master"
TARGETS = ("direct", "litellm", "complete")
LABELS = {
    "direct": "direct (emulator)",
    "litellm": "LiteLLM proxy",
    "complete": "FineTune Complete",
}
# A run keeps up when the answers come back at no less than this share of the offered rate.
KEEP_UP = 0.95


class BenchError(Exception):
    """A step that failed: the message says which and where its log is."""


def log(msg: str) -> None:
    print(f"[peer {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# Processes: each started in its own session, so stopping one ends its children (LiteLLM's
# workers) by its process group id and touches nothing else.


class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], logfile: Path):
        self.name = name
        self.logfile = logfile
        self._log = open(logfile, "wb")
        log(f"starting {name}: {' '.join(cmd)} (log {logfile})")
        self.popen = subprocess.Popen(
            cmd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )
        self.pid = self.popen.pid

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            tail = self.logfile.read_text(errors="replace")[-3000:]
            raise BenchError(f"{self.name} exited with {code}; end of {self.logfile}:\n{tail}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log(f"{self.name} ignored SIGTERM for 15 s: SIGKILL")
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=10)
        self._log.close()


def tree(root: int) -> list[int]:
    """root and all its descendants (LiteLLM may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_kib(pids: list[int]) -> int:
    """VmRSS summed over pids (shared pages of forked workers count once per process)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


TICK = os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all CPUs together, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal
    return busy, busy + v[3] + v[4]  # + idle iowait


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(pids_of, limit: float = 20.0) -> float:
    """Waits until the processes use under 5% of a core over 0.3 s (a gateway that fell
    behind may still be working off its backlog), at most `limit` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = cpu_ticks(pids_of())
        time.sleep(0.3)
        used = (cpu_ticks(pids_of()) - before) / TICK
        if used < 0.015:
            break
    return time.monotonic() - start


class RssSampler(threading.Thread):
    def __init__(self, pids_of, every: float = 0.2):
        super().__init__(daemon=True)
        self.pids_of, self.every = pids_of, every
        self.peak = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.peak = max(self.peak, rss_kib(self.pids_of()))
            self.stop_event.wait(self.every)

    def finish(self) -> int:
        self.stop_event.set()
        self.join()
        self.peak = max(self.peak, rss_kib(self.pids_of()))
        return self.peak


# ---------------------------------------------------------------------------------------
# HTTP helpers (readiness, the sanity check, the emulator's request counts).


def http(method: str, url: str, body: bytes | None = None, headers=None, timeout=10.0):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def wait_until(what: str, proc: Proc, probe, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            if probe():
                return
        except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
            last = e
        time.sleep(0.25)
    raise BenchError(f"{what} not ready after {timeout:.0f} s (last error: {last}); see {proc.logfile}")


def upstream_count(emulator_url: str) -> int:
    _, body = http("GET", f"{emulator_url}/_emulator/stats")
    return int(json.loads(body)["by_route"].get(ROUTE, 0))


# ---------------------------------------------------------------------------------------
# Load runs.


@dataclass
class Run:
    target: str
    rate: int
    round: int
    seconds: float
    attempt: int = 1
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # successful requests only
    sent_rate: float = 0.0
    answered_rate: float = 0.0
    keep_up: float = 1.0  # answers / requests in the middle of the run
    upstream_calls: int = 0
    peak_rss_kib: int = 0
    cpu_s: float = 0.0
    load_avg: float = 0.0
    others_pct: float = 0.0  # share of all CPUs busy with processes not of this benchmark
    wall_s: float = 0.0


def nearest_rank(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return sorted_values[int(k) - 1]


def rates_from(starts_ns: list[int], ends_ns: list[int]) -> tuple[float, float, float]:
    """(sent per second, answered per second, answers / requests) over the middle 60% of the
    sending window. A path that keeps up answers as many requests there as were sent there,
    give or take one; one that falls behind answers at its own capacity, however late the
    last answers of the run come (a single slow request at the end would skew a rate taken
    over the whole run)."""
    n = len(starts_ns)
    first, last = min(starts_ns, default=0), max(starts_ns, default=0)
    if n < 2 or last == first:
        return float(n), float(n), 1.0
    sent = (n - 1) / ((last - first) / 1e9)
    lo, hi = first + 0.2 * (last - first), first + 0.8 * (last - first)
    started = sum(lo <= t < hi for t in starts_ns)
    answered = sum(lo <= t < hi for t in ends_ns)
    # One answer of slack: at low rates the window holds few requests, and a single answer
    # landing just past its end is not a backlog.
    return sent, answered / ((hi - lo) / 1e9), min(1.0, (answered + 1) / started) if started else 1.0


def tally(run: Run, results) -> None:
    """Adds a generator's results, (RFC 3339 start, latency ns, None or the error), to run."""
    starts, ends = [], []
    for timestamp, latency_ns, error in results:
        start = parse_rfc3339_ns(timestamp)
        starts.append(start)
        ends.append(start + latency_ns)
        if error is None:
            run.ok += 1
            run.latencies_ms.append(latency_ns / 1e6)
        else:
            run.errors[error[:120]] = run.errors.get(error[:120], 0) + 1
    run.sent = len(starts)
    run.sent_rate, run.answered_rate, run.keep_up = rates_from(starts, ends)


class Bench:
    def __init__(self, args, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.raw = args.out / "peer-raw"
        shutil.rmtree(self.raw, ignore_errors=True)  # no stale runs beside this one's
        self.raw.mkdir(parents=True)
        self.procs: dict[str, Proc] = {}
        self.request = json.loads((HERE / "request.json").read_text())
        self.body = json.dumps(self.request, separators=(",", ":")).encode()
        self.runs: list[Run] = []
        self.idle_rss: dict[str, int] = {}

    # -- start-up --------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        # Nothing of the caller's provider settings or keys may reach the processes.
        drop = ("OPENAI_", "ANTHROPIC_", "FINETUNE_", "LITELLM_", "AZURE_", "HTTP_PROXY", "HTTPS_PROXY")
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    def start_emulator(self) -> None:
        port = free_port()
        self.emulator_url = f"http://127.0.0.1:{port}"
        env = self.base_env()
        env["RUST_LOG"] = "warn"  # the shared baseline: no per-request logging
        p = Proc(
            "emulator",
            [str(self.args.finetune), "emulator", "--addr", f"127.0.0.1:{port}", "--log-color", "never"],
            env,
            self.workdir / "emulator.log",
        )
        self.procs["emulator"] = p
        wait_until(
            "the emulator", p, lambda: http("GET", f"{self.emulator_url}/_emulator/stats")[0] == 200, 60
        )

    def start_service(self) -> None:
        out = subprocess.run(
            [str(self.args.finetune), "token", "new", "--name", "peer-bench", "--roles", "complete"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
        self.token = lines["token"].strip()
        port = free_port()
        self.service_addr = f"127.0.0.1:{port}"
        env = self.base_env()
        env["OPENAI_BASE_URL"] = f"{self.emulator_url}/v1"
        env["OPENAI_API_KEY"] = UPSTREAM_KEY
        env["FINETUNE_AUTH_TOKENS"] = lines["tokens-file line"].strip()
        p = Proc(
            "finetune serve",
            [
                str(self.args.finetune),
                "serve",
                "--addr",
                self.service_addr,
                "--data-dir",
                str(self.workdir / "finetune-data"),
                "--tiers",
                str(HERE / "tiers.toml"),
                "--log-color",
                "never",
            ],
            env,
            self.workdir / "finetune-serve.log",
        )
        self.procs["complete"] = p

        def serving() -> bool:
            r = subprocess.run(
                [str(self.args.grpcurl), "-plaintext", self.service_addr, "grpc.health.v1.Health/Check"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            return r.returncode == 0 and '"SERVING"' in r.stdout

        wait_until("finetune serve", p, serving, 60)

    def start_litellm(self) -> None:
        port = free_port()
        self.litellm_url = f"http://127.0.0.1:{port}"
        env = self.base_env()
        env.update(
            {
                "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
                "PEER_EMULATOR_BASE_URL": f"{self.emulator_url}/v1",
                "PEER_UPSTREAM_KEY": UPSTREAM_KEY,
                # No internet here: no telemetry, and the price map from the package, not
                # fetched at start.
                "LITELLM_TELEMETRY": "False",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "HF_HUB_OFFLINE": "1",
            }
        )
        cmd = [str(self.args.litellm), "--config", str(HERE / "litellm.yaml"), "--host", "127.0.0.1", "--port", str(port)]
        if self.args.litellm_workers:
            cmd += ["--num_workers", str(self.args.litellm_workers)]
            if self.args.litellm_workers > 1:
                # Its worker health check times out on a busy 2-core machine otherwise.
                cmd += ["--timeout_worker_healthcheck", "60"]
        p = Proc("LiteLLM proxy", cmd, env, self.workdir / "litellm.log")
        self.procs["litellm"] = p
        wait_until(
            "the LiteLLM proxy",
            p,
            lambda: http("GET", f"{self.litellm_url}/health/readiness", timeout=5)[0] == 200,
            240,
        )

    # -- the same request through all three ----------------------------------------------

    def grpc_request(self) -> dict:
        """The gRPC form of request.json: the same messages and output cap, tier fast (routed
        to the same model in tiers.toml)."""
        roles = {"system": "CHAT_ROLE_SYSTEM", "user": "CHAT_ROLE_USER", "assistant": "CHAT_ROLE_ASSISTANT"}
        return {
            "messages": [{"role": roles[m["role"]], "content": m["content"]} for m in self.request["messages"]],
            "tier": "fast",
            "max_output_tokens": self.request["max_completion_tokens"],
        }

    def http_headers(self, target: str) -> dict[str, str]:
        key = UPSTREAM_KEY if target == "direct" else LITELLM_MASTER_KEY
        return {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}

    def url(self, target: str) -> str:
        base = self.emulator_url if target == "direct" else self.litellm_url
        return f"{base}/v1/chat/completions"

    def sanity(self) -> dict:
        """One request through each path: each must reach the emulator exactly once and get
        the same answer, which the emulator derives from the messages and the output cap."""
        answers = {}
        for target in self.targets:
            before = upstream_count(self.emulator_url)
            if target == "complete":
                r = subprocess.run(
                    [
                        str(self.args.grpcurl), "-plaintext",
                        "-import-path", str(ROOT / "proto"),
                        "-proto", "fileengine/finetune/v1/service.proto",
                        "-H", f"authorization: Bearer {self.token}",
                        "-d", json.dumps(self.grpc_request()),
                        self.service_addr, "fileengine.finetune.v1.FineTuneService/Complete",
                    ],
                    capture_output=True, text=True, timeout=30,
                )
                if r.returncode != 0:
                    raise BenchError(f"Complete failed: {r.stderr.strip()}")
                c = json.loads(r.stdout)["completion"]
                answers[target] = (c["text"], int(c["usage"]["completionTokens"]))
            else:
                try:
                    _, body = http("POST", self.url(target), self.body, self.http_headers(target), timeout=60)
                except urllib.error.HTTPError as e:
                    raise BenchError(f"{target}: HTTP {e.code}: {e.read()[:500]!r}") from e
                c = json.loads(body)
                answers[target] = (c["choices"][0]["message"]["content"], int(c["usage"]["completion_tokens"]))
            calls = upstream_count(self.emulator_url) - before
            if calls != 1:
                raise BenchError(f"{target}: one request made {calls} calls to the emulator, not 1")
        texts = {a[0] for a in answers.values()}
        if len(texts) != 1:
            raise BenchError(f"the paths got different answers, so not the same request: {answers}")
        text, tokens = next(iter(answers.values()))
        log(f"sanity: all paths answered the same {tokens}-token text: {text[:70]!r}...")
        return {"answer": text, "completion_tokens": tokens}

    # -- load -------------------------------------------------------------------------------

    def gateway_pids(self, target: str):
        proc = self.procs["emulator" if target == "direct" else target]
        return lambda: tree(proc.pid)

    def attack(self, target: str, rate: int, seconds: float, tag: str) -> Run:
        run = Run(target, rate, 0, seconds)
        raw = self.raw / f"{tag}.{'json' if target == 'complete' else 'bin'}"
        timeout = f"{self.args.timeout}s"
        if target == "complete":
            cmd = [
                str(self.args.ghz), "--insecure",
                "--protoset", str(self.args.protoset),
                "--call", "fileengine.finetune.v1.FineTuneService.Complete",
                "-d", json.dumps(self.grpc_request()),
                "-m", json.dumps({"authorization": f"Bearer {self.token}"}),
                # Open loop: requests leave on the rate's schedule whether or not earlier
                # ones have been answered; the end waits for the last answers.
                "--async", "--rps", str(rate), "-z", f"{seconds}s", "--duration-stop", "wait",
                "-c", str(self.args.ghz_workers), "--connections", str(self.args.grpc_connections),
                "-t", timeout, "-O", "json", "-o", str(raw),
                self.service_addr,
            ]
        else:
            targets = self.workdir / f"targets-{target}.json"
            targets.write_text(
                json.dumps(
                    {
                        "method": "POST",
                        "url": self.url(target),
                        "body": base64.b64encode(self.body).decode(),
                        "header": {k: [v] for k, v in self.http_headers(target).items()},
                    }
                )
                + "\n"
            )
            cmd = [
                str(self.args.vegeta), "attack", "-format=json", f"-targets={targets}",
                f"-rate={rate}/1s", f"-duration={seconds}s", f"-timeout={timeout}",
                f"-output={raw}",
            ]
        pids_of = self.gateway_pids(target)
        run.load_avg = os.getloadavg()[0]
        before_calls = upstream_count(self.emulator_url)
        cpu_before = cpu_ticks(pids_of())
        ours_before, machine_before, gen_before = self.our_ticks(), machine_ticks(), children_cpu_s()
        sampler = RssSampler(pids_of)
        sampler.start()
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True)
        run.wall_s = time.monotonic() - t0
        run.peak_rss_kib = sampler.finish()
        run.cpu_s = (cpu_ticks(pids_of()) - cpu_before) / TICK
        busy, total = (a - b for a, b in zip(machine_ticks(), machine_before))
        ours = self.our_ticks() - ours_before + (children_cpu_s() - gen_before) * TICK
        run.others_pct = 100 * max(0.0, busy - ours) / total if total else 0.0
        if r.returncode != 0:
            raise BenchError(f"{cmd[0]} failed ({r.returncode}) on {target} at {rate}/s: {r.stderr.strip()[-2000:]}")
        self.procs["emulator" if target == "direct" else target].check_alive()
        run.upstream_calls = upstream_count(self.emulator_url) - before_calls
        if target == "complete":
            self.read_ghz(raw, run)
        else:
            self.read_vegeta(raw, run)
        return run

    def read_ghz(self, raw: Path, run: Run) -> None:
        details = json.loads(raw.read_text()).get("details") or []
        tally(
            run,
            (
                (d["timestamp"], int(d["latency"]),
                 None if d.get("status") == "OK" and not d.get("error") else f"{d.get('status')}: {d.get('error', '')}")
                for d in details
            ),
        )

    def read_vegeta(self, raw: Path, run: Run) -> None:
        out = subprocess.run(
            [str(self.args.vegeta), "encode", "--to", "json", str(raw)], capture_output=True, text=True, check=True
        ).stdout
        results = (json.loads(line) for line in out.splitlines())
        tally(
            run,
            (
                (d["timestamp"], int(d["latency"]), None if d["code"] == 200 and not d["error"] else f"{d['code']}: {d['error']}")
                for d in results
            ),
        )

    def our_ticks(self) -> int:
        """CPU ticks of the emulator and the gateways (their whole process trees)."""
        return sum(cpu_ticks(tree(p.pid)) for p in self.procs.values())

    def wait_idle(self, limit: float) -> None:
        """Waits until other processes use under 15% of the CPUs (ours are idle between
        runs), at most `limit` seconds."""
        if not limit:
            return
        deadline = time.monotonic() + limit
        while True:
            before = machine_ticks()
            time.sleep(1)
            busy, total = (a - b for a, b in zip(machine_ticks(), before))
            if total and busy / total < 0.15:
                return
            if time.monotonic() > deadline:
                log(f"still {100 * busy / total:.0f}% busy after {limit:.0f} s: running anyway")
                return

    @staticmethod
    def shortfall(runs: list[Run]) -> str | None:
        """Why these runs do not show the rate sustained, or None when they do."""
        if any(r.sent == 0 or r.sent_rate < KEEP_UP * r.rate for r in runs):
            # The load generator could not send at the rate: says nothing of the gateway.
            return "the load generator fell behind"
        failed = sum(r.sent - r.ok for r in runs)
        if failed:
            return f"{failed} request(s) failed"
        slow = min(runs, key=lambda r: r.keep_up)
        if slow.keep_up < KEEP_UP:
            return f"fell behind (answered {slow.answered_rate:.1f}/s)"
        return None

    def sustained(self, runs: list[Run]) -> bool:
        return self.shortfall(runs) is None

    def measure(self) -> None:
        args = self.args
        for target in self.targets:
            self.idle_rss[target] = rss_kib(self.gateway_pids(target)())
        # Unmeasured warm-up: connection pools, lazy imports, the first-request paths.
        for target in self.targets:
            log(f"warm-up: {target} at {args.rates[0]}/s for {args.warmup} s")
            self.attack(target, args.rates[0], args.warmup, f"warmup-{target}")
            wait_quiet(self.gateway_pids(target))
        self.sustained_rate = {t: None for t in self.targets}
        self.stopped: dict[str, str] = {}
        self.retried: list[str] = []
        active = list(self.targets)
        for rate in args.rates:
            paths = list(active)
            for attempt in range(1, args.tries + 1):
                if attempt > 1:
                    log(f"{rate}/s again for {', '.join(paths)} (try {attempt}), after waiting up to "
                        f"{args.retry_idle:.0f} s for other load to drop")
                    self.wait_idle(args.retry_idle)
                runs = self.rounds(rate, paths, attempt)
                failing = {t: self.shortfall(runs[t]) for t in paths if not self.sustained(runs[t])}
                if not failing or attempt == args.tries:
                    break
                # A shared machine can starve any path for a moment: try the rate once more,
                # with the direct baseline again so the overhead compares runs of one try.
                for t, why in failing.items():
                    others = max(r.others_pct for r in runs[t])
                    self.retried.append(f"{rate}/s {LABELS[t]}: first try {why}, others' load up to {others:.0f}%")
                paths = ["direct"] + [t for t in failing if t != "direct"]
            for target in list(active):
                last = self.last_try(rate, target)
                if self.sustained(last):
                    self.sustained_rate[target] = rate
                else:
                    why = self.shortfall(last)
                    self.stopped[target] = f"{rate}/s: {why}"
                    log(f"{target} did not sustain {rate}/s ({why}): no higher rates for it")
                    active.remove(target)
            if "direct" not in active:
                log("the direct path did not sustain this rate, so no overhead can be measured above it: stopping")
                break
            if active == ["direct"]:
                break

    def rounds(self, rate: int, paths: list[str], attempt: int) -> dict[str, list[Run]]:
        args = self.args
        runs: dict[str, list[Run]] = {t: [] for t in paths}
        for rnd in range(1, args.rounds + 1):
            for target in paths:  # direct, LiteLLM, Complete, then again: drift hits all alike
                self.wait_idle(args.wait_idle)
                run = self.attack(target, rate, args.seconds, f"{target}-{rate}-{attempt}-{rnd}")
                run.round, run.attempt = rnd, attempt
                self.runs.append(run)
                runs[target].append(run)
                lat = sorted(run.latencies_ms)
                log(
                    f"{rate:>5}/s round {rnd} {target:<8} ok {run.ok}/{run.sent} "
                    f"answered {run.answered_rate:.1f}/s p50 {nearest_rank(lat, 50):.2f} "
                    f"p99 {nearest_rank(lat, 99):.2f} ms rss {run.peak_rss_kib / 1024:.0f} MiB "
                    f"others {run.others_pct:.0f}%"
                )
                quiet = wait_quiet(self.gateway_pids(target))
                if quiet > 5:
                    log(f"  {target} took {quiet:.1f} s to go quiet after the run")
        return runs

    def last_try(self, rate: int, target: str, attempt: int | None = None) -> list[Run]:
        """The runs of target at rate in its last try (or in the given one)."""
        runs = [r for r in self.runs if r.rate == rate and r.target == target]
        if not runs:
            return []
        want = max(r.attempt for r in runs) if attempt is None else attempt
        return [r for r in runs if r.attempt == want]

    # -- report -----------------------------------------------------------------------------

    def stats(self, runs: list[Run]) -> dict:
        lat = sorted(x for r in runs for x in r.latencies_ms)
        sent = sum(r.sent for r in runs)
        ok = sum(r.ok for r in runs)
        errors: dict[str, int] = {}
        for r in runs:
            for k, v in r.errors.items():
                errors[k] = errors.get(k, 0) + v
        return {
            "rate": runs[0].rate,
            "target": runs[0].target,
            "try": runs[0].attempt,
            "rounds": len(runs),
            "sent": sent,
            "ok": ok,
            "success": ok / sent if sent else 0.0,
            "errors": errors,
            "answered_rate_min": min(r.answered_rate for r in runs),
            "sent_rate_min": min(r.sent_rate for r in runs),
            "p50_ms": nearest_rank(lat, 50),
            "p90_ms": nearest_rank(lat, 90),
            "p99_ms": nearest_rank(lat, 99),
            "max_ms": lat[-1] if lat else float("nan"),
            "upstream_calls_per_request": sum(r.upstream_calls for r in runs) / sent if sent else 0.0,
            "peak_rss_mib": max(r.peak_rss_kib for r in runs) / 1024,
            "cpu_ms_per_request": 1000 * sum(r.cpu_s for r in runs) / sent if sent else 0.0,
            "others_pct_max": max(r.others_pct for r in runs),
            "sustained": self.sustained(runs),
        }

    def write(self, meta: dict) -> tuple[Path, Path]:
        # Each path's figures at a rate are those of its last try; a gateway's overhead is
        # taken against the direct runs of that same try.
        rows, overhead = [], []
        for rate in sorted({r.rate for r in self.runs}):
            for target in self.targets:
                runs = self.last_try(rate, target)
                if not runs:
                    continue
                row = self.stats(runs)
                rows.append(row)
                direct = self.last_try(rate, "direct", row["try"])
                if target == "direct" or not direct:
                    continue
                d = self.stats(direct)
                overhead.append(
                    {
                        "rate": rate,
                        "target": target,
                        **{f"added_{p}_ms": row[f"{p}_ms"] - d[f"{p}_ms"] for p in ("p50", "p90", "p99")},
                        "sustained": row["sustained"],
                    }
                )
        gateways = []
        for t in self.targets:
            at = [r for r in rows if r["target"] == t]
            best = self.sustained_rate.get(t)
            gateways.append(
                {
                    "target": t,
                    "highest_sustained_rate": best,
                    "stepped_to": max(r["rate"] for r in at) if at else None,
                    "limit_found": t in self.stopped,
                    "stopped_at": self.stopped.get(t),
                    "idle_rss_mib": self.idle_rss.get(t, 0) / 1024,
                    "peak_rss_mib": max((r["peak_rss_mib"] for r in at), default=0.0),
                    "processes": len(self.gateway_pids(t)()),
                }
            )
        doc = {
            "meta": meta,
            "retried": self.retried,
            "rows": rows,
            "overhead": overhead,
            "gateways": gateways,
            "runs": [
                {k: v for k, v in vars(r).items() if k != "latencies_ms"} | {"samples": len(r.latencies_ms)}
                for r in self.runs
            ],
        }
        json_path = self.args.out / "peer-results.json"
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        md_path = self.args.out / "peer-results.md"
        md_path.write_text(render_markdown(doc))
        return md_path, json_path


def parse_rfc3339_ns(ts: str) -> int:
    """vegeta and ghz write RFC 3339 timestamps with up to nanoseconds and an offset."""
    if ts.endswith("Z"):
        ts = ts[:-1] + "+00:00"
    # Split off the fraction, which datetime reads only to microseconds.
    frac_ns = 0
    head, dot, rest = ts.partition(".")
    if dot:
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        frac_ns = int((digits + "000000000")[:9])
        ts = head + rest[i:]
    dt = datetime.datetime.fromisoformat(ts)
    return int(dt.timestamp()) * 1_000_000_000 + frac_ns


def fmt(x: float, nd: int = 2) -> str:
    return "n/a" if x != x else f"{x:.{nd}f}"


def render_markdown(doc: dict) -> str:
    m = doc["meta"]
    out = [
        "# Peer benchmark: LiteLLM proxy and FineTune Complete in front of one emulator",
        "",
        f"Run of {m['date']} at {m['commit']} on {m['machine']}; `{m['command']}`. "
        f"LiteLLM {m['litellm_version']} ({m['litellm_workers']}), {m['tool_versions']}. {m['rounds']} rounds of {m['seconds']} s per rate and path, "
        f"the paths taking turns. 1-minute load average {m['load_before']:.1f} before, "
        f"{m['load_after']:.1f} after; {m['duration_s']:.0f} s in all.",
        "",
        f"Request: {m['request_summary']}; every path's answer: {m['sanity']['completion_tokens']} tokens, "
        "the same text.",
        "",
        "## Latency per rate (ms, nearest rank over every answered request of the rounds)",
        "",
        "answered/s: answers per second in the middle 60% of the run, worst round; CPU ms/req: CPU time of the path's server processes (the emulator for direct) per "
        "request; peak RSS: VmRSS during the runs, summed over the process tree; others' load: "
        "share of both CPUs used by processes outside this benchmark, worst round (0% on a machine of "
        "its own; other builds take whatever CPU the paths leave, so it runs higher beside the "
        "cheaper paths).",
        "",
        "| rate/s | path | sent | success | answered/s (worst round) | p50 | p90 | p99 | max | "
        "upstream calls/req | CPU ms/req | peak RSS MiB | others' load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        out.append(
            f"| {r['rate']} | {LABELS[r['target']]} | {r['sent']} | {100 * r['success']:.1f}% | "
            f"{r['answered_rate_min']:.1f} | {fmt(r['p50_ms'])} | {fmt(r['p90_ms'])} | {fmt(r['p99_ms'])} | "
            f"{fmt(r['max_ms'], 1)} | {r['upstream_calls_per_request']:.2f} | {r['cpu_ms_per_request']:.2f} | "
            f"{r['peak_rss_mib']:.0f} | {r['others_pct_max']:.0f}% |"
        )
    out += [
        "",
        "## Overhead = gateway − direct (ms)",
        "",
        "| rate/s | gateway | p50 | p90 | p99 | kept up |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for o in doc["overhead"]:
        out.append(
            f"| {o['rate']} | {LABELS[o['target']]} | {fmt(o['added_p50_ms'])} | {fmt(o['added_p90_ms'])} | "
            f"{fmt(o['added_p99_ms'])} | {'yes' if o['sustained'] else '**no**'} |"
        )
    out += [
        "",
        "## Highest rate sustained and memory",
        "",
        "Sustained: every request of every round answered with success, and answers coming back at "
        f"{int(KEEP_UP * 100)}% of the rate they were sent at in the middle of each run (a gateway "
        "that falls behind builds a backlog), and the load generator sending at the rate. "
        "A rate a path misses is tried once more, after waiting for other load to drop, before the "
        "path leaves the steps.",
        "",
        "| path | highest rate sustained | first rate not sustained | RSS idle MiB | peak RSS MiB | processes |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for g in doc["gateways"]:
        best = g["highest_sustained_rate"]
        if best is None:
            best_s = "none"
        elif g["limit_found"]:
            best_s = str(best)
        else:
            best_s = f"≥ {best} (no limit found)"
        out.append(
            f"| {LABELS[g['target']]} | {best_s} | {g['stopped_at'] or '-'} | {g['idle_rss_mib']:.0f} | {g['peak_rss_mib']:.0f} | {g['processes']} |"
        )
    if doc["retried"]:
        out += ["", "Tried a second time (the tables show the second try, direct included):", ""]
        out += [f"- {line}" for line in doc["retried"]]
    errs = [(r["rate"], r["target"], r["errors"]) for r in doc["rows"] if r["errors"]]
    if errs:
        out += ["", "## Errors", ""]
        for rate, target, e in errs:
            out.append(f"- {rate}/s {LABELS[target]}: " + "; ".join(f"{k} x{v}" for k, v in e.items()))
    return "\n".join(out) + "\n"


def version_of(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a missing version is reported, not fatal
        return f"unknown ({e})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--finetune", type=Path, required=True)
    ap.add_argument("--ghz", type=Path, required=True)
    ap.add_argument("--protoset", type=Path, required=True)
    ap.add_argument("--vegeta", type=Path, required=True)
    ap.add_argument("--grpcurl", type=Path, required=True)
    ap.add_argument("--litellm", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--command", default="bench/peer/run.sh")
    ap.add_argument("--tool-versions", default="")
    ap.add_argument("--rates", default="10,25,50,70,100,150,200,300,500,700,1000,1500,2000,3000")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--timeout", type=int, default=10)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--litellm-workers", type=int, default=0)
    ap.add_argument("--ghz-workers", type=int, default=50)
    ap.add_argument("--grpc-connections", type=int, default=4)
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--wait-idle", type=float, default=0)
    ap.add_argument("--tries", type=int, default=2)
    ap.add_argument("--retry-idle", type=float, default=20)
    args = ap.parse_args()
    args.rates = sorted(int(x) for x in args.rates.split(","))
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            raise SystemExit(f"bench/peer: unknown target {t!r}; targets are {', '.join(TARGETS)}")
    if "direct" not in targets:
        raise SystemExit("bench/peer: the direct path is the baseline of every overhead: keep it in --targets")
    args.out.mkdir(parents=True, exist_ok=True)

    workdir = Path(tempfile.mkdtemp(prefix="finetune-peer-"))
    bench = Bench(args, workdir)
    bench.targets = [t for t in TARGETS if t in targets]
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    failed = True
    try:
        bench.start_emulator()
        if "complete" in bench.targets:
            bench.start_service()
        if "litellm" in bench.targets:
            bench.start_litellm()
        sanity = bench.sanity()
        bench.measure()
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
        req = bench.request
        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit + (" (with local changes)" if dirty else ""),
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}",
            "command": args.command,
            "litellm_version": version_of([str(args.litellm.parent / "python"), "-c",
                                           "import importlib.metadata as m; print(m.version('litellm'))"]),
            "litellm_workers": f"{args.litellm_workers} workers" if args.litellm_workers else "its default workers",
            "tool_versions": args.tool_versions,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "rates": args.rates,
            "ghz_workers": args.ghz_workers,
            "grpc_connections": args.grpc_connections,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "duration_s": time.monotonic() - started,
            "request": req,
            "request_summary": (
                f"{len(req['messages'])} message(s) of {sum(len(m['content']) for m in req['messages'])} "
                f"characters to `{req['model']}`, max {req['max_completion_tokens']} output tokens"
            ),
            "sanity": sanity,
        }
        md, js = bench.write(meta)
        failed = False
        print(md.read_text())
        log(f"wrote {md} and {js} (raw generator output in {bench.raw})")
    except BenchError as e:
        log(f"FAILED: {e}")
    finally:
        for p in reversed(list(bench.procs.values())):
            p.stop()
        if failed or args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
