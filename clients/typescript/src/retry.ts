// Bounded exponential backoff, used to repeat calls that are safe to repeat: StartTraining
// (idempotent per request_id, a bounded number of attempts) and WatchJob (resumed from the
// last sequence received, within a time budget: see WatchResumePolicy).

import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { FineTuneError } from "./errors.js";

/** How often and how patiently a safe call is repeated after UNAVAILABLE. */
export interface RetryPolicy {
  /** Attempts in a row that may fail before the error is thrown (the first call counts). */
  maxAttempts: number;
  /** The delay before the second attempt; it doubles with each further attempt. */
  initialDelayMs: number;
  /** The longest delay between two attempts. */
  maxDelayMs: number;
}

/** StartTraining's retries: 6 attempts, 100 ms doubling to 3 s. */
export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 6,
  initialDelayMs: 100,
  maxDelayMs: 3_000,
};

/** The pause after `failures` failed attempts in a row (1, 2, ...), with jitter. */
export function backoffMs(
  policy: Pick<RetryPolicy, "initialDelayMs" | "maxDelayMs">,
  failures: number,
): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (failures - 1));
  // Half fixed, half random, so clients cut off together do not come back together.
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/**
 * How a watch resumes broken streams: from `initialDelayMs` doubling to `maxDelayMs` (with
 * jitter), until `budgetMs` have passed without an event since the first break. An event
 * resets the budget and the backoff; a heartbeat does not (it shows the stream is alive, not
 * that the job moves).
 */
export interface WatchResumePolicy {
  /** The pause before the first resume. */
  initialDelayMs: number;
  /** The longest pause between two resumes. */
  maxDelayMs: number;
  /** How long a watch keeps resuming without receiving an event before it throws the last error. */
  budgetMs: number;
}

/** 200 ms doubling to 5 s, for up to 60 s without an event: outlasts a server restart. */
export const DEFAULT_WATCH_RESUME: WatchResumePolicy = {
  initialDelayMs: 200,
  maxDelayMs: 5_000,
  budgetMs: 60_000,
};

/**
 * The pause before retrying after `failures` failed attempts: the server's RetryInfo delay
 * when the error carries one (at most `maxDelayMs`), else the backoff.
 */
export function retryDelayMs(policy: RetryPolicy, failures: number, error: unknown): number {
  const asked = error instanceof FineTuneError ? error.retryDelayMs : undefined;
  if (asked !== undefined && asked > 0) {
    return Math.min(policy.maxDelayMs, asked);
  }
  return backoffMs(policy, failures);
}

/** Waits `ms`; throws a FineTuneError with Code.Canceled if `signal` aborts first. */
export async function pause(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, signal === undefined ? undefined : { signal });
  } catch (reason) {
    throw new FineTuneError(ConnectError.from(reason, Code.Canceled));
  }
}
