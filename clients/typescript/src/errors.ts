// FineTuneError: the one error type the client throws for a failed call, with the service's
// google.rpc details (sent in the grpc-status-details-bin trailer) already decoded.

import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  RetryInfoSchema,
  type BadRequest_FieldViolation,
  type PreconditionFailure_Violation,
} from "./gen/google/rpc/error_details_pb.js";

/** The google.rpc.ErrorInfo domain of every error the FineTune service sends. */
export const ERROR_DOMAIN = "finetune.fileengine";

/**
 * A failed call. `code` is the gRPC status as a number (connect's `Code`:
 * `Code.InvalidArgument`, ...) and `codeName` its gRPC name (`INVALID_ARGUMENT`), which
 * `message` starts with; `reason` the service's google.rpc.ErrorInfo reason (UPPER_SNAKE_CASE, such as
 * `DATASET_INVALID`; empty when the error did not come from the service, for example a
 * connection failure). The original ConnectError is `cause`.
 */
export class FineTuneError extends Error {
  override readonly name = "FineTuneError";
  /** The gRPC status code, a number (connect's `Code` enum): compare with `Code.NotFound`. */
  readonly code: Code;
  /** The gRPC name of `code`, such as `FAILED_PRECONDITION`: what to print or log. */
  readonly codeName: string;
  /** The status message as the server sent it (without the code prefix of `message`). */
  readonly rawMessage: string;
  /** google.rpc.ErrorInfo.reason, or "" without an ErrorInfo. */
  readonly reason: string;
  /** google.rpc.ErrorInfo.domain (`finetune.fileengine` for the service's errors), or "". */
  readonly domain: string;
  /** google.rpc.ErrorInfo.metadata: key/value context of the reason (for example a job id). */
  readonly metadata: Readonly<Record<string, string>>;
  /** google.rpc.BadRequest field violations: which request field is wrong and why. */
  readonly fieldViolations: readonly BadRequest_FieldViolation[];
  /** google.rpc.PreconditionFailure violations (StartTraining lists dataset problems here). */
  readonly preconditionViolations: readonly PreconditionFailure_Violation[];
  /**
   * google.rpc.RetryInfo.retry_delay in milliseconds, when the server asked to wait before
   * trying again; undefined otherwise. (JavaScript has no duration type.)
   */
  readonly retryDelayMs: number | undefined;
  /** The response headers and trailers (gRPC metadata) that came with the error. */
  readonly responseMetadata: Headers;
  /**
   * The request id the client made for a StartTraining call that failed (you gave none): call
   * again with it to get the job the call may have started, never a second one. "" for other
   * calls, and when you gave the request id yourself.
   */
  readonly requestId: string;
  override readonly cause: ConnectError;

  constructor(err: ConnectError, context: { requestId?: string } = {}) {
    const info = err.findDetails(ErrorInfoSchema)[0];
    const reason = info?.reason ?? "";
    super(`${codeName(err.code)}${reason ? ` (${reason})` : ""}: ${err.rawMessage}`, {
      cause: err,
    });
    this.cause = err;
    this.code = err.code;
    this.codeName = codeName(err.code);
    this.requestId = context.requestId ?? "";
    this.rawMessage = err.rawMessage;
    this.reason = reason;
    this.domain = info?.domain ?? "";
    this.metadata = { ...(info?.metadata ?? {}) };
    this.fieldViolations = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
    this.preconditionViolations = err
      .findDetails(PreconditionFailureSchema)
      .flatMap((d) => d.violations);
    const delay = err.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryDelayMs =
      delay === undefined ? undefined : Number(delay.seconds) * 1000 + delay.nanos / 1e6;
    this.responseMetadata = err.metadata;
  }
}

/** `Code.InvalidArgument` -> `INVALID_ARGUMENT`, the name gRPC and grpcurl print. */
export function codeName(code: Code): string {
  return (Code[code] ?? `CODE_${code}`).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/**
 * Wraps a ConnectError as a FineTuneError (with `requestId`, when given); anything else, such
 * as a file-system error, is returned as it is.
 */
export function toFineTuneError(err: unknown, requestId = ""): unknown {
  if (err instanceof FineTuneError) {
    return err.requestId === requestId ? err : new FineTuneError(err.cause, { requestId });
  }
  if (err instanceof ConnectError) {
    return new FineTuneError(err, { requestId });
  }
  return err;
}

// Node's codes for a connection that broke under a call, which connect-node reports as
// INTERNAL, ABORTED or UNKNOWN depending on where the break was noticed.
const BROKEN_CONNECTION = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_INVALID_SESSION",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_STREAM_ERROR",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

/**
 * Whether a call failed because the service, or the connection to it, was unavailable, so
 * that repeating the call may succeed: UNAVAILABLE, or a connection that broke under the call.
 * `signal` is the caller's own abort signal, if the call had one.
 *
 * A connection closed under an HTTP/2 stream resets the stream with CANCEL, which connect-node
 * reports as `Code.Canceled`; a cancellation the caller did not ask for is therefore counted
 * as a broken connection.
 */
export function isUnavailable(err: unknown, signal?: AbortSignal): boolean {
  const ce = err instanceof FineTuneError ? err.cause : err;
  if (!(ce instanceof ConnectError)) {
    return false;
  }
  switch (ce.code) {
    case Code.Unavailable:
      return true;
    case Code.Canceled:
      return signal?.aborted !== true;
    case Code.Internal:
    case Code.Aborted:
    case Code.Unknown:
      return causedByBrokenConnection(ce);
    default:
      return false;
  }
}

function causedByBrokenConnection(err: Error): boolean {
  for (let e: unknown = err.cause, depth = 0; e instanceof Error && depth < 8; depth++) {
    const nodeCode = (e as { code?: unknown }).code;
    if (typeof nodeCode === "string" && BROKEN_CONNECTION.has(nodeCode)) {
      return true;
    }
    e = e.cause;
  }
  return false;
}
