// Bounded exponential backoff, used to repeat calls that are safe to repeat: StartTraining
// (idempotent per request_id) and WatchJob (resumed from the last sequence received), each
// within a time budget that runs from the first failure.

import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { FineTuneError } from "./errors.js";

/** How StartTraining is repeated after UNAVAILABLE (always with the same request id). */
export interface RetryPolicy {
  /** Attempts that may fail before the error is thrown (the first call counts). Unbounded. */
  maxAttempts: number;
  /** The delay before the second attempt; it doubles with each further attempt. */
  initialDelayMs: number;
  /** The longest delay between two attempts, and the most of a RetryInfo delay honoured. */
  maxDelayMs: number;
  /**
   * How long after the first failure the call is still repeated; then the last error is
   * thrown. The caller's `timeoutMs` or `signal`, when sooner, ends the retries too.
   */
  budgetMs: number;
}

/**
 * StartTraining's retries: 200 ms doubling to 5 s with jitter (or the server's RetryInfo
 * delay, at most 5 s), for up to 60 s after the first failure.
 */
export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: Number.POSITIVE_INFINITY,
  initialDelayMs: 200,
  maxDelayMs: 5_000,
  budgetMs: 60_000,
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
export function retryDelayMs(
  policy: Pick<RetryPolicy, "initialDelayMs" | "maxDelayMs">,
  failures: number,
  error: unknown,
): number {
  const asked = error instanceof FineTuneError ? error.retryDelayMs : undefined;
  if (asked !== undefined && asked > 0) {
    return Math.min(policy.maxDelayMs, asked);
  }
  return backoffMs(policy, failures);
}

/**
 * The failures of one retried call in a row, and when to give up: after `maxAttempts`
 * failures, `budgetMs` after the first failure, or when the next try would come after
 * `deadline` (a `performance.now()` time). `reset()` when the call makes progress (a watch's
 * event): the next failure starts a new budget.
 */
export class RetryBudget {
  /** Failures since the start or the last reset. */
  failures = 0;
  private firstFailureAt = 0;

  constructor(
    private readonly policy: Pick<RetryPolicy, "initialDelayMs" | "maxDelayMs" | "budgetMs"> & {
      maxAttempts?: number;
    },
    private readonly deadline = Number.POSITIVE_INFINITY,
  ) {}

  reset(): void {
    this.failures = 0;
  }

  /** Counts a failure; returns the pause before the next try, or undefined to give up. */
  next(error: unknown): number | undefined {
    const now = performance.now();
    this.failures += 1;
    if (this.failures === 1) {
      this.firstFailureAt = now;
    }
    const budgetLeft = this.policy.budgetMs - (now - this.firstFailureAt);
    const delay = retryDelayMs(this.policy, this.failures, error);
    if (
      this.failures >= (this.policy.maxAttempts ?? Number.POSITIVE_INFINITY) ||
      budgetLeft <= 0 ||
      now + delay >= this.deadline
    ) {
      return undefined;
    }
    // The last try comes when the budget ends rather than never.
    return Math.min(delay, budgetLeft);
  }
}

/** Waits `ms`; throws a FineTuneError with Code.Canceled if `signal` aborts first. */
export async function pause(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, signal === undefined ? undefined : { signal });
  } catch (reason) {
    throw new FineTuneError(ConnectError.from(reason, Code.Canceled));
  }
}
