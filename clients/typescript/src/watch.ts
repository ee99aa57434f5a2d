// watchJob: WatchJob as an async iterable of events that survives dropped streams.
//
// The server numbers a job's events 1, 2, 3, ... and WatchJob(after_sequence = N) sends the
// events after N. So after a broken stream (UNAVAILABLE, a cut connection, or a stream that
// ends before the job's terminal event) the watcher calls WatchJob again with the last
// sequence it yielded, and the caller sees every event once, in order. It keeps trying for a
// time budget rather than a number of attempts, so that a server restart (seconds of refused
// connections) is outlasted whatever the backoff.

import { Code, ConnectError, type Client } from "@connectrpc/connect";
import {
  JobEventKind,
  JobState,
  type Heartbeat,
  type Job,
  type JobEvent,
} from "./gen/fileengine/finetune/v1/job_pb.js";
import type { FineTuneService } from "./gen/fileengine/finetune/v1/service_pb.js";
import { isUnavailable, toFineTuneError } from "./errors.js";
import {
  DEFAULT_WATCH_RESUME,
  backoffMs,
  pause,
  type RetryPolicy,
  type WatchResumePolicy,
} from "./retry.js";

export interface WatchOptions {
  /** Yield only events after this sequence (default 0n: the job's whole log). */
  afterSequence?: bigint;
  /** Stops the watch; the iterator then throws a FineTuneError with Code.Canceled. */
  signal?: AbortSignal;
  /**
   * How broken streams are resumed (default DEFAULT_WATCH_RESUME: 200 ms doubling to 5 s,
   * for up to 60 s without an event).
   */
  resume?: Partial<WatchResumePolicy>;
  /**
   * @deprecated Use `resume`. Kept for one release: `maxAttempts`, when set, also ends the
   * watch after that many broken streams in a row without an event; `initialDelayMs` and
   * `maxDelayMs` apply when `resume` does not set them.
   */
  retry?: Partial<RetryPolicy>;
  /** Called with the job snapshot each stream starts with (once more after each reconnect). */
  onSnapshot?: (job: Job) => void;
  /** Called for each heartbeat; `lastSequence` is the latest sequence the server sent. */
  onHeartbeat?: (heartbeat: Heartbeat) => void;
  /** Called before each reconnect, with the error (undefined: the stream ended early). */
  onReconnect?: (info: { attempt: number; afterSequence: bigint; error: unknown }) => void;
}

const TERMINAL = new Set([JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]);

/** Whether a job in `state` has finished (succeeded, failed or cancelled). */
export function isTerminal(state: JobState): boolean {
  return TERMINAL.has(state);
}

/**
 * Yields the job's events after `afterSequence` until the event that puts the job in a
 * terminal state (the last one yielded; its `job` is the final snapshot).
 */
export async function* watchJob(
  client: Client<typeof FineTuneService>,
  jobId: string,
  options: WatchOptions = {},
): AsyncGenerator<JobEvent, void, undefined> {
  const { signal } = options;
  const policy = resumePolicy(DEFAULT_WATCH_RESUME, options);
  const maxAttempts = options.retry?.maxAttempts;
  let last = options.afterSequence ?? 0n;
  // Broken streams since the last event, and when the first of them broke: the budget runs
  // from there, so a quiet job (heartbeats only, for any time) still gets the whole budget.
  let failures = 0;
  let brokenSince = 0;
  for (;;) {
    let error: unknown = undefined;
    let startedTerminal = false;
    try {
      for await (const res of client.watchJob({ jobId, afterSequence: last }, { signal })) {
        const item = res.item;
        if (item.case === "snapshot") {
          startedTerminal = isTerminal(item.value.state);
          options.onSnapshot?.(item.value);
        } else if (item.case === "heartbeat") {
          options.onHeartbeat?.(item.value);
        } else if (item.case === "event") {
          failures = 0;
          const event = item.value;
          if (event.sequence <= last) {
            continue; // already yielded; the server does not resend, but never show it twice
          }
          last = event.sequence;
          yield event;
          if (event.kind === JobEventKind.STATE_CHANGED && event.job && isTerminal(event.job.state)) {
            return;
          }
        }
      }
      // A clean end: the job had already finished when this stream started (and its remaining
      // events were sent), or the stream was closed early and must be resumed.
      if (startedTerminal) {
        return;
      }
    } catch (err) {
      if (!isUnavailable(err, signal)) {
        throw toFineTuneError(err);
      }
      error = err;
    }
    failures += 1;
    const now = performance.now();
    if (failures === 1) {
      brokenSince = now;
    }
    const leftMs = policy.budgetMs - (now - brokenSince);
    if (leftMs <= 0 || (maxAttempts !== undefined && failures >= maxAttempts)) {
      throw toFineTuneError(
        error ??
          new ConnectError(
            `WatchJob ${jobId}: the stream ended ${failures} times before the job finished`,
            Code.Unavailable,
          ),
      );
    }
    options.onReconnect?.({ attempt: failures, afterSequence: last, error });
    await pause(Math.min(leftMs, backoffMs(policy, failures)), signal);
  }
}

/** `base` overridden by the deprecated `retry` delays, then by `resume`. */
export function resumePolicy(
  base: WatchResumePolicy,
  { resume, retry }: Pick<WatchOptions, "resume" | "retry">,
): WatchResumePolicy {
  const policy = { ...base };
  if (retry?.initialDelayMs !== undefined) policy.initialDelayMs = retry.initialDelayMs;
  if (retry?.maxDelayMs !== undefined) policy.maxDelayMs = retry.maxDelayMs;
  return { ...policy, ...resume };
}
