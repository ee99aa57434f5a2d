"""File Engine's fine-tuning pipeline through the Python SDK: validate, train, watch, test.

    finetune serve --emulator --emulator-time-scale 100 &
    python examples/pipeline.py                      # the repository's sample dataset
    python examples/pipeline.py my-data.jsonl --addr host:50051 --token $TOKEN --tls

Exit status: 0 when the model was trained and answered, 1 when the dataset has errors or the
job did not succeed, 2 when a call failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fileengine.finetune import FineTuneClient, FineTuneError, JobEventKind, JobState, Severity

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "training-data.jsonl"
PROMPT = "Build me a landing page with dark theme"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=SAMPLE)
    parser.add_argument("--addr", default=os.environ.get("FINETUNE_ADDR", "127.0.0.1:50051"))
    parser.add_argument("--token", default=os.environ.get("FINETUNE_TOKEN"))
    parser.add_argument("--tls", action="store_true", help="TLS with the system's roots")
    parser.add_argument("--ca-file", type=Path, help="TLS trusting this PEM file")
    parser.add_argument("--suffix", default="file-engine")
    parser.add_argument("--tier", default="fast", help="the tier to promote the model to")
    args = parser.parse_args()

    with FineTuneClient(args.addr, token=args.token, tls=args.tls, ca_file=args.ca_file) as client:
        try:
            return run(client, args.dataset, args.suffix, args.tier)
        except FineTuneError as error:
            print(f"error: {error}", file=sys.stderr)
            for v in error.field_violations:
                print(f"  {v.field}: {v.description}", file=sys.stderr)
            for p in error.precondition_violations:
                print(f"  {p.subject}: {p.type}: {p.description}", file=sys.stderr)
            return 2


def run(client: FineTuneClient, dataset: Path, suffix: str, tier: str) -> int:
    # 1. Validate: problems are in the report, not exceptions.
    report = client.validate_dataset(dataset)
    print(
        f"{dataset.name}: {report.training.examples} examples, {report.training.tokens.total} "
        f"tokens, {report.epochs} epochs, estimated ${report.estimated_cost_usd:.2f}; "
        f"{report.error_count} errors, {report.warning_count} warnings"
    )
    for problem in report.problems:
        if problem.severity == Severity.ERROR:
            print(f"  line {problem.line}: {problem.code}: {problem.message}")
    if report.error_count:
        return 1

    # 2. Train: returns at once; the request id makes a retry safe.
    job = client.start_training(dataset, suffix=suffix).job
    print(f"started {job.id} (request {job.request_id})")

    # 3. Watch: resumes by itself if the stream drops.
    watch = client.watch_job(job.id)
    for event in watch:
        if event.kind == JobEventKind.STATE_CHANGED:
            print(f"  [{event.sequence}] {JobState(event.job.state).name}: {event.message}")
        elif event.kind == JobEventKind.METRICS and event.metrics.step % 10 == 0:
            m = event.metrics
            print(f"  [{event.sequence}] step {m.step}/{m.total_steps} loss {m.train_loss:.3f}")
    final = watch.job
    if final is None or final.state != JobState.SUCCEEDED:
        reason = final.error.message if final is not None else "no snapshot"
        print(f"job did not succeed: {reason}")
        return 1
    print(
        f"succeeded: {final.fine_tuned_model} ({final.trained_tokens} trained tokens, "
        f"${final.actual_cost_usd:.2f}; estimate {final.estimated_tokens} tokens, "
        f"${final.estimated_cost_usd:.2f}; resumed {watch.resumes} times)"
    )

    # 4. Test: serve the model from a tier, then ask it something, whole and streamed.
    client.promote_model(tier, job_id=final.id)
    answer = client.complete(PROMPT, tier=tier)
    print(f"{tier} ({answer.model}): {len(answer.text)} characters, ${answer.cost_usd:.5f}")
    stream = client.stream_complete(PROMPT, tier=tier)
    for delta in stream:
        print(delta, end="", flush=True)
    print()
    assert stream.completion is not None
    print(f"streamed {stream.completion.usage.completion_tokens} tokens in "
          f"{stream.completion.latency_ms:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
