// FineTuneClient: the FineTune service's RPCs with files for datasets, a generated request id
// for StartTraining, a watch that resumes by itself, and FineTuneError for every failure.
// Anything not wrapped here is on `client.raw`, the generated connect client.

import { randomUUID } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { basename } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type CallOptions, type Client } from "@connectrpc/connect";
import type {
  CompleteRequestSchema,
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
  JobEvent,
  ListJobsRequestSchema,
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
import { isUnavailable, toFineTuneError } from "./errors.js";
import {
  DEFAULT_RETRY,
  DEFAULT_WATCH_RESUME,
  pause,
  retryDelayMs,
  type RetryPolicy,
  type WatchResumePolicy,
} from "./retry.js";
import { createTransport, type Connection, type ConnectionOptions } from "./transport.js";
import { resumePolicy, watchJob, type WatchOptions } from "./watch.js";

export interface FineTuneClientOptions extends ConnectionOptions {
  /** Dataset files up to this size are sent inline; larger ones via UploadDataset. 8 MiB. */
  inlineLimitBytes?: number;
  /** UploadDataset chunk size. 1 MiB. */
  uploadChunkBytes?: number;
  /** How StartTraining is repeated on UNAVAILABLE (same request_id). Default DEFAULT_RETRY. */
  retry?: Partial<RetryPolicy>;
  /** How `watch()` resumes broken streams. Default DEFAULT_WATCH_RESUME (60 s budget). */
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

/** A StreamComplete item: a piece of text, then one final completion. */
export type StreamCompleteItem = Exclude<StreamCompleteResponse["item"], { case: undefined }>;

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
   * confirm it yet. A FineTuneError this method throws (a deadline, or UNAVAILABLE after the
   * retries) carries the request id in `err.requestId`, yours or the generated one: call again
   * with it to get the job the failed call may have started, never a second one.
   */
  async startTraining(
    options: StartTrainingOptions,
    callOptions?: CallOptions,
  ): Promise<StartTrainingResult> {
    const { training, validation, requestId = randomUUID(), ...rest } = options;
    try {
      const request = {
        ...rest,
        requestId,
        training: await this.datasetSource(training, callOptions),
        validation:
          validation === undefined ? undefined : await this.datasetSource(validation, callOptions),
      };
      const res = await this.startTrainingWithRetries(request, callOptions);
      return Object.assign(res, { job: required(res.job, "StartTrainingResponse.job") });
    } catch (err) {
      throw toFineTuneError(err, requestId);
    }
  }

  private async startTrainingWithRetries(
    request: MessageInitShape<typeof StartTrainingRequestSchema>,
    callOptions: CallOptions | undefined,
  ): Promise<StartTrainingResponse> {
    for (let failures = 1; ; failures++) {
      let delayMs: number;
      try {
        return await this.raw.startTraining(request, callOptions);
      } catch (err) {
        const error = toFineTuneError(err);
        if (!isUnavailable(err, callOptions?.signal) || failures >= this.retry.maxAttempts) {
          throw error;
        }
        delayMs = retryDelayMs(this.retry, failures, error);
      }
      await pause(delayMs, callOptions?.signal);
    }
  }

  /** The latest snapshot of a job (this service's `job-...` id or OpenAI's `ftjob-...`). */
  async getJob(jobId: string, options?: CallOptions): Promise<Job> {
    const res = await wrap(() => this.raw.getJob({ jobId }, options));
    return required(res.job, "GetJobResponse.job");
  }

  /** One page of jobs, newest first; pass `nextPageToken` back as `pageToken`. */
  async listJobs(
    request: Omit<MessageInitShape<typeof ListJobsRequestSchema>, "$typeName"> = {},
    options?: CallOptions,
  ): Promise<ListJobsResponse> {
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
   * WatchOptions for the hooks and limits).
   *
   *     for await (const event of client.watch(job.id)) console.log(event.sequence, event.message);
   */
  watch(jobId: string, options: WatchOptions = {}): AsyncIterable<JobEvent> {
    return watchJob(this.raw, jobId, {
      ...options,
      resume: resumePolicy(this.watchResume, options),
    });
  }

  // --- Serving ---

  /** One answer from a tier (`fast`, `pro`, `auto`) or a model. */
  async complete(
    request: Omit<MessageInitShape<typeof CompleteRequestSchema>, "$typeName">,
    options?: CallOptions,
  ): Promise<Completion> {
    const res = await wrap(() => this.raw.complete(request, options));
    return required(res.completion, "CompleteResponse.completion");
  }

  /**
   * The answer as it is generated: `{case: "delta", value: text}` items, then one
   * `{case: "completion", value: Completion}` whose text is the deltas joined.
   */
  async *streamComplete(
    request: Omit<MessageInitShape<typeof CompleteRequestSchema>, "$typeName">,
    options?: CallOptions,
  ): AsyncIterable<StreamCompleteItem> {
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
   * Makes a model the one a tier serves: `{tier: "fast", source: {case: "jobId", value: id}}`
   * (a succeeded job's model) or `{..., source: {case: "model", value: name}}`.
   */
  async promoteModel(
    request: Omit<MessageInitShape<typeof PromoteModelRequestSchema>, "$typeName">,
    options?: CallOptions,
  ): Promise<PromoteModelResponse> {
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
