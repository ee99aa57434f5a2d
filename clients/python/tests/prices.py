"""What a completion should cost, worked out from the repository's data/models.toml and the
usage the service reported, without the service's price lookup: each test names the exact
`[[inference]]` entry it expects the served model to bill at, so a wrong lookup (a prefix that
matches the wrong entry, the base price applied to a fine-tuned model) fails the comparison."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tomllib

from fileengine.finetune import Completion

from harness import REPO

MODELS = REPO / "data" / "models.toml"


@dataclass(frozen=True)
class Price:
    """One `[[inference]]` entry, in dollars per million tokens."""

    input: float
    cached_input: float
    cache_write: float
    output: float


def price(model: str, *, fine_tuned: bool) -> Price:
    """The `[[inference]]` entry for `model`, the fine-tuned one when `fine_tuned`."""
    with MODELS.open("rb") as f:
        entries: list[dict[str, Any]] = tomllib.load(f)["inference"]
    matches = [
        e for e in entries if e["model"] == model and e.get("fine_tuned", False) == fine_tuned
    ]
    assert matches, f"no [[inference]] entry for {model} (fine_tuned {fine_tuned}) in {MODELS}"
    entry = matches[0]
    return Price(
        input=entry["input"],
        cached_input=entry.get("cached_input", entry["input"]),
        cache_write=entry.get("cache_write", entry["input"]),
        output=entry["output"],
    )


def assert_cost(completion: Completion, model: str, *, fine_tuned: bool = False) -> None:
    """Asserts that `completion` was served by `model` (a model fine-tuned from it when
    `fine_tuned`) and cost what its usage costs at that entry's prices: plain input, cache
    reads, cache writes and output, each at its own rate."""
    served = f"ft:{model}:" if fine_tuned else model
    assert completion.model.startswith(served), f"{completion.model} is not billed as {model}"
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, usage
    p = price(model, fine_tuned=fine_tuned)
    plain = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
    expected = (
        plain * p.input
        + usage.cached_tokens * p.cached_input
        + usage.cache_write_tokens * p.cache_write
        + usage.completion_tokens * p.output
    ) / 1e6
    assert abs(completion.cost_usd - expected) < 1e-12, (
        f"{completion.model} cost ${completion.cost_usd} for {usage}; "
        f"data/models.toml's {model} prices make it ${expected}"
    )
