// FineTuneClient: the FineTune service's RPCs with files for datasets, a generated request id
// for StartTraining, a watch that resumes by itself, and FineTuneError for every failure.
// Anything not wrapped here is on `client.raw`, the generated connect client.

import { randomUUID } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { basename } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type CallOptions, type Client } from "@connectrpc/connect";
import type {
  Completion,
  PromoteModelRequestSchema,
  PromoteModelResponse,
  Rating,
  RecordFeedbackResponse,
  StreamCompleteResponse,
  Tier,
  TierStats,
} from "./gen/fileengine/finetune/v1/completion_pb.js";
import type {
  DatasetSourceSchema,
  UploadDatasetResponse,
  ValidateDatasetRequestSchema,
  ValidationReport,
} from "./gen/fileengine/finetune/v1/dataset_pb.js";
import type {
  Job,
  ListJobsResponse,
  StartTrainingRequestSchema,
  StartTrainingResponse,
} from "./gen/fileengine/finetune/v1/job_pb.js";
import { FineTuneService } from "./gen/fileengine/finetune/v1/service_pb.js";
import {
  DEFAULT_INLINE_LIMIT_BYTES,
  DEFAULT_UPLOAD_CHUNK_BYTES,
  uploadRequests,
  type DatasetInput,
} from "./dataset.js";
import { warnDeprecated } from "./deprecation.js";
import { isUnavailable, toFineTuneError } from "./errors.js";
import { JobList, type ListJobsOptions, type ListJobsPageRequest } from "./list.js";
import {
  DEFAULT_RETRY,
  DEFAULT_WATCH_RESUME,
  RetryBudget,
  pause,
  type RetryPolicy,
  type WatchResumePolicy,
} from "./retry.js";
import { CompletionStream, type CompleteRequestInit } from "./stream.js";
import { createTransport, type Connection, type ConnectionOptions } from "./transport.js";
import { JobWatch, resumePolicy, type WatchOptions } from "./watch.js";

export interface FineTuneClientOptions extends ConnectionOptions {
  /** Dataset files up to this size are sent inline; larger ones via UploadDataset. 8 MiB. */
  inlineLimitBytes?: number;
  /** UploadDataset chunk size. 1 MiB. */
  uploadChunkBytes?: number;
  /**
   * How StartTraining is repeated on UNAVAILABLE (same request_id). Default DEFAULT_RETRY:
   * 200 ms doubling to 5 s, RetryInfo honoured up to 5 s, for 60 s after the first failure.
   */
  retry?: Partial<RetryPolicy>;
  /** How `watchJob()` resumes broken streams. Default DEFAULT_WATCH_RESUME (60 s budget). */
  watchResume?: Partial<WatchResumePolicy>;
}

type DatasetSourceInit = MessageInitShape<typeof DatasetSourceSchema>;

/** ValidateDataset's parameters besides the training dataset. */
export type ValidateOptions = Omit<
  MessageInitShape<typeof ValidateDatasetRequestSchema>,
  "$typeName" | "training" | "validation"
> & { validation?: DatasetInput };

/**
 * StartTraining's parameters: the proto's fields, with datasets as paths (or DatasetSources)
 * and request_id optional (a new UUID when absent; read it back from `job.requestId`).
 */
export type StartTrainingOptions = Omit<
  MessageInitShape<typeof StartTrainingRequestSchema>,
  "$typeName" | "training" | "validation" | "requestId"
> & { training: DatasetInput; validation?: DatasetInput; requestId?: string };

/** StartTraining's response with its job always present (the service always sends one). */
export type StartTrainingResult = StartTrainingResponse & { job: Job };

/** A StreamComplete item of `streamCompleteItems()`: a piece of text, then one final completion. */
export type StreamCompleteItem = Exclude<StreamCompleteResponse["item"], { case: undefined }>;

/** The model `promoteModel` makes a tier serve: a succeeded job's, or one named directly. */
export type PromoteSource =
  | { jobId: string; model?: undefined }
  | { model: string; jobId?: undefined };

/** PromoteModel's request as a plain object, `{tier, source: {case: "jobId", value}}`. */
export type PromoteModelRequestInit = Omit<
  MessageInitShape<typeof PromoteModelRequestSchema>,
  "$typeName"
>;

export class FineTuneClient {
  /** The generated connect client, for calls this class does not wrap. Throws ConnectError. */
  readonly raw: Client<typeof FineTuneService>;
  private readonly inlineLimitBytes: number;
  private readonly uploadChunkBytes: number;
  private readonly retry: RetryPolicy;
  private readonly watchResume: WatchResumePolicy;
  private readonly connection: Connection;

  /** Connects lazily: the first call opens the HTTP/2 connection. */
  constructor(options: FineTuneClientOptions) {
    this.connection = createTransport(options);
    this.raw = createClient(FineTuneService, this.connection.transport);
    this.inlineLimitBytes = options.inlineLimitBytes ?? DEFAULT_INLINE_LIMIT_BYTES;
    this.uploadChunkBytes = options.uploadChunkBytes ?? DEFAULT_UPLOAD_CHUNK_BYTES;
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.watchResume = { ...DEFAULT_WATCH_RESUME, ...options.watchResume };
  }

  /**
   * Closes the connection; open calls and watches fail with Code.Canceled. Optional: an idle
   * connection does not keep the process alive.
   */
  close(): void {
    this.connection.close();
  }

  // --- Datasets ---

  /** Stores a file on the server with UploadDataset; its `datasetId` names it in requests. */
  async uploadDataset(path: string, options?: CallOptions): Promise<UploadDatasetResponse> {
    return wrap(() => this.raw.uploadDataset(uploadRequests(path, this.uploadChunkBytes), options));
  }

  /** The DatasetSource for a file: its bytes inline when small, else uploaded first. */
  async datasetSource(input: DatasetInput, options?: CallOptions): Promise<DatasetSourceInit> {
    if (typeof input !== "string") {
      return input;
    }
    const fileName = basename(input);
    const { size } = await stat(input);
    if (size <= this.inlineLimitBytes) {
      return { source: { case: "content", value: await readFile(input) }, fileName };
    }
    const { datasetId } = await this.uploadDataset(input, options);
    return { source: { case: "datasetId", value: datasetId }, fileName };
  }

  /**
   * Validates a dataset file: problems, token counts, cost. A dataset with errors is not a
   * failure: the errors are in the report (`errorCount`, `problems`).
   */
  async validateDataset(
    training: DatasetInput,
    options: ValidateOptions = {},
    callOptions?: CallOptions,
  ): Promise<ValidationReport> {
    const { validation, ...rest } = options;
    const request = {
      ...rest,
      training: await this.datasetSource(training, callOptions),
      validation: validation === undefined ? undefined : await this.datasetSource(validation, callOptions),
    };
    const res = await wrap(() => this.raw.validateDataset(request, callOptions));
    return required(res.report, "ValidateDatasetResponse.report");
  }

  // --- Training ---

  /**
   * Starts a fine-tuning job. The request is repeated with the same request_id while the
   * service is UNAVAILABLE (after the server's RetryInfo delay, when it sends one), which is
   * safe: the service starts one job per request_id. That covers reason
   * `UPSTREAM_OUTCOME_UNKNOWN`: OpenAI may have created the job and the service could not
   * confirm it yet. The retries (DEFAULT_RETRY, or the client's `retry`) end 60 s after the
   * first failure, or at the caller's `timeoutMs` (which covers every attempt) or `signal`.
   *
   * When you gave no request id, a FineTuneError this method throws (a deadline, or
   * UNAVAILABLE after the retries) carries the one the client made in `err.requestId`: call
   * again with it to get the job the failed call may have started, never a second one.
   */
  async startTraining(
    options: StartTrainingOptions,
    callOptions?: CallOptions,
  ): Promise<StartTrainingResult> {
    const { training, validation, requestId: given, ...rest } = options;
    const requestId = given ?? randomUUID();
    const timeoutMs = callOptions?.timeoutMs;
    const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs;
    try {
      const request = {
        ...rest,
        requestId,
        training: await this.datasetSource(training, callOptions),
        validation:
          validation === undefined ? undefined : await this.datasetSource(validation, callOptions),
      };
      const res = await this.startTrainingWithRetries(request, callOptions, deadline);
      return Object.assign(res, { job: required(res.job, "StartTrainingResponse.job") });
    } catch (err) {
      // The caller knows an id it gave; one the client made is lost unless the error has it.
      throw toFineTuneError(err, given === undefined ? requestId : "");
    }
  }

  private async startTrainingWithRetries(
    request: MessageInitShape<typeof StartTrainingRequestSchema>,
    callOptions: CallOptions | undefined,
    deadline: number | undefined,
  ): Promise<StartTrainingResponse> {
    const budget = new RetryBudget(this.retry, deadline);
    for (;;) {
      // Each attempt gets what is left of the caller's timeout, not all of it again.
      const attemptOptions =
        deadline === undefined
          ? callOptions
          : { ...callOptions, timeoutMs: Math.max(1, Math.round(deadline - performance.now())) };
      let delayMs: number | undefined;
      try {
        return await this.raw.startTraining(request, attemptOptions);
      } catch (err) {
        const error = toFineTuneError(err);
        delayMs = isUnavailable(err, callOptions?.signal) ? budget.next(error) : undefined;
        if (delayMs === undefined) {
          throw error;
        }
      }
      await pause(delayMs, callOptions?.signal);
    }
  }

  /** The latest snapshot of a job (this service's `job-...` id or OpenAI's `ftjob-...`). */
  async getJob(jobId: string, options?: CallOptions): Promise<Job> {
    const res = await wrap(() => this.raw.getJob({ jobId }, options));
    return required(res.job, "GetJobResponse.job");
  }

  /**
   * Every job, newest first (only those in `state`, when given), fetched `pageSize` at a time
   * as the loop goes:
   *
   *     for await (const job of client.listJobs({ state: JobState.RUNNING })) console.log(job.id);
   *
   * Deprecated for one release: awaiting the result gives the first page, as in 0.1.0 (see
   * JobList.then); call `listJobsPage()` for one page.
   */
  listJobs(request: ListJobsOptions = {}, options?: CallOptions): JobList {
    return new JobList((page) => this.listJobsPage(page, options), request);
  }

  /** One page of jobs, newest first: `{jobs, nextPageToken}`; pass the token back as `pageToken`. */
  async listJobsPage(request: ListJobsPageRequest = {}, options?: CallOptions): Promise<ListJobsResponse> {
    return wrap(() => this.raw.listJobs(request, options));
  }

  /** Cancels a job that has not finished (a finished one is FAILED_PRECONDITION). */
  async cancelJob(jobId: string, options?: CallOptions): Promise<Job> {
    const res = await wrap(() => this.raw.cancelJob({ jobId }, options));
    return required(res.job, "CancelJobResponse.job");
  }

  /**
   * The job's events, in order and each once, until the event that ends the job; dropped
   * streams are resumed from the last event, for up to 60 s without an event by default (see
   * WatchOptions for the hooks and limits). The JobWatch also has the latest `job`, the
   * `resumes` and `lastSequence` so far, and `stop()`.
   *
   *     const watch = client.watchJob(job.id);
   *     for await (const event of watch) console.log(event.sequence, event.message);
   *     console.log(watch.job?.state);
   */
  watchJob(jobId: string, options: WatchOptions = {}): JobWatch {
    return new JobWatch(this.raw, jobId, {
      ...options,
      resume: resumePolicy(this.watchResume, options),
    });
  }

  /** @deprecated Renamed `watchJob()` (the same, with the same options); goes in 0.3.0. */
  watch(jobId: string, options: WatchOptions = {}): JobWatch {
    warnDeprecated("FINETUNE_WATCH", "client.watch() is deprecated: use client.watchJob()");
    return this.watchJob(jobId, options);
  }

  // --- Serving ---

  /** One answer from a tier (`fast`, `pro`, `auto`) or a model. */
  async complete(request: CompleteRequestInit, options?: CallOptions): Promise<Completion> {
    const res = await wrap(() => this.raw.complete(request, options));
    return required(res.completion, "CompleteResponse.completion");
  }

  /**
   * The answer as it is generated: `for await` yields pieces of text; then `.completion` is
   * the final Completion.
   *
   *     const stream = client.streamComplete({ tier: "fast", messages });
   *     for await (const text of stream) process.stdout.write(text);
   *     console.log(stream.completion?.usage);
   */
  streamComplete(request: CompleteRequestInit, options?: CallOptions): CompletionStream {
    return new CompletionStream(this.raw, request, options);
  }

  /**
   * @deprecated The 0.1.0 `streamComplete()`: `{case: "delta", value: text}` items, then one
   * `{case: "completion", value: Completion}`. Use `streamComplete()` (text, then
   * `.completion`); goes in 0.3.0.
   */
  async *streamCompleteItems(
    request: CompleteRequestInit,
    options?: CallOptions,
  ): AsyncIterable<StreamCompleteItem> {
    warnDeprecated(
      "FINETUNE_STREAM_COMPLETE_ITEMS",
      "client.streamCompleteItems() is deprecated: " +
        "use client.streamComplete() (text pieces, then .completion)",
    );
    try {
      for await (const res of this.raw.streamComplete({ request }, options)) {
        if (res.item.case !== undefined) {
          yield res.item;
        }
      }
    } catch (err) {
      throw toFineTuneError(err);
    }
  }

  /** The tiers and the model each serves now. */
  async listTiers(options?: CallOptions): Promise<Tier[]> {
    return (await wrap(() => this.raw.listTiers({}, options))).tiers;
  }

  /**
   * Makes a model the one a tier serves: `promoteModel("fast", {jobId})` (a succeeded job's
   * fine-tuned model) or `promoteModel("fast", {model: name})`. Returns `{tier,
   * previousModel}`: the tier as it is now and the model it served before.
   */
  promoteModel(tier: string, source: PromoteSource, options?: CallOptions): Promise<PromoteModelResponse>;
  /**
   * @deprecated The 0.1.0 form, `promoteModel({tier, source: {case: "jobId", value}})`: use
   * `promoteModel(tier, {jobId})` or `promoteModel(tier, {model})`; goes in 0.3.0.
   */
  promoteModel(request: PromoteModelRequestInit, options?: CallOptions): Promise<PromoteModelResponse>;
  async promoteModel(
    tierOrRequest: string | PromoteModelRequestInit,
    sourceOrOptions?: PromoteSource | CallOptions,
    options?: CallOptions,
  ): Promise<PromoteModelResponse> {
    let request: PromoteModelRequestInit;
    if (typeof tierOrRequest === "string") {
      const { jobId, model } = (sourceOrOptions ?? {}) as Partial<PromoteSource>;
      request = {
        tier: tierOrRequest,
        source:
          jobId !== undefined
            ? { case: "jobId", value: jobId }
            : model !== undefined
              ? { case: "model", value: model }
              : undefined, // neither: the service answers INVALID_ARGUMENT
      };
    } else {
      warnDeprecated(
        "FINETUNE_PROMOTE_MODEL_REQUEST",
        "client.promoteModel({tier, source}) is deprecated: " +
          "use client.promoteModel(tier, {jobId} or {model})",
      );
      request = tierOrRequest;
      options = sourceOrOptions as CallOptions | undefined;
    }
    return wrap(() => this.raw.promoteModel(request, options));
  }

  /** Rates a served response (`Completion.responseId`). */
  async recordFeedback(
    responseId: string,
    rating: Rating,
    options?: CallOptions,
  ): Promise<RecordFeedbackResponse> {
    return wrap(() => this.raw.recordFeedback({ responseId, rating }, options));
  }

  /** Serving statistics per tier and split arm; `tier` limits them to one tier. */
  async getTierStats(tier = "", options?: CallOptions): Promise<TierStats[]> {
    return (await wrap(() => this.raw.getTierStats({ tier }, options))).stats;
  }
}

async function wrap<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw toFineTuneError(err);
  }
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) {
    throw new Error(`the service sent no ${what}`);
  }
  return value;
}
