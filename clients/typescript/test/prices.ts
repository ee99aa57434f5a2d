// What a completion should cost, worked out from the repository's data/models.toml and the
// usage the service reported, without the service's price lookup: each test names the exact
// [[inference]] entry it expects the served model to bill at, so a wrong lookup (a prefix that
// matches the wrong entry, the base price applied to a fine-tuned model) fails the comparison.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { parse } from "smol-toml";
import type { Completion } from "@fileengine/finetune";
import { repoRoot } from "./harness.js";

/** One [[inference]] entry, in dollars per million tokens. */
export interface Price {
  input: number;
  cachedInput: number;
  cacheWrite: number;
  output: number;
}

interface InferenceEntry {
  model: string;
  fine_tuned?: boolean;
  input: number;
  cached_input?: number;
  cache_write?: number;
  output: number;
}

const modelsToml = `${repoRoot}data/models.toml`;

/** The [[inference]] entry for `model`, the fine-tuned one when `fineTuned`. */
export function price(model: string, fineTuned: boolean): Price {
  // Unchecked shape: a missing price makes the expected cost NaN, which no cost equals.
  const doc = parse(readFileSync(modelsToml, "utf8")) as unknown as { inference: InferenceEntry[] };
  const entry = doc.inference.find((e) => e.model === model && (e.fine_tuned ?? false) === fineTuned);
  assert.ok(entry, `no [[inference]] entry for ${model} (fine_tuned ${fineTuned}) in ${modelsToml}`);
  return {
    input: entry.input,
    cachedInput: entry.cached_input ?? entry.input,
    cacheWrite: entry.cache_write ?? entry.input,
    output: entry.output,
  };
}

/**
 * Asserts that `completion` was served by `model` (a model fine-tuned from it when
 * `fineTuned`) and cost what its usage costs at that entry's prices: plain input, cache reads,
 * cache writes and output, each at its own rate.
 */
export function assertCost(completion: Completion, model: string, fineTuned = false): void {
  const served = fineTuned ? `ft:${model}:` : model;
  assert.ok(completion.model.startsWith(served), `${completion.model} is not billed as ${model}`);
  const usage = completion.usage;
  assert.ok(usage, "a completion reports its usage");
  assert.ok(usage.promptTokens > 0n && usage.completionTokens > 0n, JSON.stringify(usage, bigints));
  const p = price(model, fineTuned);
  const plain = usage.promptTokens - usage.cachedTokens - usage.cacheWriteTokens;
  const expected =
    (Number(plain) * p.input +
      Number(usage.cachedTokens) * p.cachedInput +
      Number(usage.cacheWriteTokens) * p.cacheWrite +
      Number(usage.completionTokens) * p.output) /
    1e6;
  assert.ok(
    Math.abs(completion.costUsd - expected) < 1e-12,
    `${completion.model} cost $${completion.costUsd} for ${JSON.stringify(usage, bigints)}; ` +
      `data/models.toml's ${model} prices make it $${expected}`,
  );
}

/** JSON.stringify cannot write bigints by itself. */
function bigints(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}
