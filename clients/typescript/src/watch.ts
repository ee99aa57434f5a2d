// JobWatch: WatchJob as an async iterable of events that survives dropped streams.
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
import { RetryBudget, pause, type RetryPolicy, type WatchResumePolicy } from "./retry.js";
import { StoppableStream } from "./stoppable.js";

export interface WatchOptions {
  /** Yield only events after this sequence (default 0n: the job's whole log). */
  afterSequence?: bigint;
  /**
   * Aborts the watch; the loop then throws a FineTuneError with Code.Canceled. (`stop()`
   * ends it without an error.)
   */
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
 * One watch of a job: `for await` over its events after `afterSequence`, each once and in
 * order, until the event that puts the job in a terminal state (the last one yielded; its
 * `job` is the final snapshot). Dropped streams are resumed from `lastSequence`. `stop()`
 * ends the loop without an error (the job itself goes on), unlike the `signal` option, which
 * ends it with Code.Canceled. Iterate it once: a second loop continues where the first left off.
 */
export class JobWatch extends StoppableStream<JobEvent> {
  /**
   * The latest job: the stream's snapshot, then the `job` of each event that carries one;
   * undefined until the first stream item arrives.
   */
  job: Job | undefined = undefined;
  /** How many times a dropped stream was called again. */
  resumes = 0;
  /** The sequence of the last event yielded (or `afterSequence`): where a resume starts. */
  lastSequence: bigint;

  constructor(
    private readonly client: Client<typeof FineTuneService>,
    readonly jobId: string,
    private readonly options: WatchOptions & { resume: WatchResumePolicy },
  ) {
    super(options.signal);
    this.lastSequence = options.afterSequence ?? 0n;
  }

  protected async *run(): AsyncGenerator<JobEvent, void, undefined> {
    const { options, jobId, signal } = this;
    // A quiet job (heartbeats only, for any time) still gets the whole budget: it runs from
    // the first break after the last event.
    const budget = new RetryBudget({ ...options.resume, maxAttempts: options.retry?.maxAttempts });
    for (;;) {
      let error: unknown = undefined;
      let startedTerminal = false;
      try {
        const stream = this.client.watchJob({ jobId, afterSequence: this.lastSequence }, { signal });
        for await (const res of stream) {
          if (this.stopped) {
            return; // items that arrived before stop() are dropped
          }
          const item = res.item;
          if (item.case === "snapshot") {
            this.job = item.value;
            startedTerminal = isTerminal(item.value.state);
            options.onSnapshot?.(item.value);
          } else if (item.case === "heartbeat") {
            options.onHeartbeat?.(item.value);
          } else if (item.case === "event") {
            budget.reset();
            const event = item.value;
            if (event.sequence <= this.lastSequence) {
              continue; // already yielded; the server does not resend, but never show it twice
            }
            this.lastSequence = event.sequence;
            if (event.job) {
              this.job = event.job;
            }
            yield event;
            if (event.kind === JobEventKind.STATE_CHANGED && event.job && isTerminal(event.job.state)) {
              return;
            }
          }
        }
        // A clean end: the job had already finished when this stream started (and its
        // remaining events were sent), or the stream was closed early and must be resumed.
        if (startedTerminal) {
          return;
        }
      } catch (err) {
        if (this.stopped) {
          return;
        }
        if (!isUnavailable(err, signal)) {
          throw toFineTuneError(err);
        }
        error = err;
      }
      const delayMs = budget.next(error);
      if (delayMs === undefined) {
        throw toFineTuneError(
          error ??
            new ConnectError(
              `WatchJob ${jobId}: the stream ended ${budget.failures} times before the job finished`,
              Code.Unavailable,
            ),
        );
      }
      options.onReconnect?.({ attempt: budget.failures, afterSequence: this.lastSequence, error });
      try {
        await pause(delayMs, signal);
      } catch (err) {
        if (this.stopped) {
          return;
        }
        throw err;
      }
      this.resumes += 1;
    }
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
