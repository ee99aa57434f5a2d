// The public API: the client, its error type, and the generated messages and enums it uses.
// 64-bit integer fields (sequences, token counts, sizes) are bigint, as protobuf-es decodes them.

export {
  FineTuneClient,
  type FineTuneClientOptions,
  type PromoteModelRequestInit,
  type PromoteSource,
  type StartTrainingOptions,
  type StartTrainingResult,
  type StreamCompleteItem,
  type ValidateOptions,
} from "./client.js";
export {
  DEFAULT_INLINE_LIMIT_BYTES,
  DEFAULT_UPLOAD_CHUNK_BYTES,
  hashFile,
  type DatasetInput,
} from "./dataset.js";
export { ERROR_DOMAIN, FineTuneError, codeName, isUnavailable } from "./errors.js";
export {
  DEFAULT_RETRY,
  DEFAULT_WATCH_RESUME,
  type RetryPolicy,
  type WatchResumePolicy,
} from "./retry.js";
export {
  createTransport,
  type Connection,
  type ConnectionOptions,
  type TlsOptions,
} from "./transport.js";
export { JobList, type ListJobsOptions, type ListJobsPageRequest } from "./list.js";
export { CompletionStream, type CompleteRequestInit } from "./stream.js";
export { JobWatch, isTerminal, type WatchOptions } from "./watch.js";

export { Code, ConnectError, type CallOptions, type Interceptor } from "@connectrpc/connect";
export * from "./gen/fileengine/finetune/v1/completion_pb.js";
export * from "./gen/fileengine/finetune/v1/dataset_pb.js";
export * from "./gen/fileengine/finetune/v1/job_pb.js";
export * from "./gen/fileengine/finetune/v1/service_pb.js";
export {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  RetryInfoSchema,
  type BadRequest,
  type BadRequest_FieldViolation,
  type ErrorInfo,
  type PreconditionFailure,
  type PreconditionFailure_Violation,
  type RetryInfo,
} from "./gen/google/rpc/error_details_pb.js";
