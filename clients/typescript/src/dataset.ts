// Reading a dataset file for the service: its SHA-256 and size, and the UploadDataset stream
// (a header, then the file in fixed-size chunks) for files too large to send inline.

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { basename } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  DatasetSourceSchema,
  UploadDatasetRequestSchema,
} from "./gen/fileengine/finetune/v1/dataset_pb.js";

/** Files up to this size are sent inline in the request; larger ones are uploaded first. */
export const DEFAULT_INLINE_LIMIT_BYTES = 8 * 1024 * 1024;
/** The chunk size of UploadDataset streams. */
export const DEFAULT_UPLOAD_CHUNK_BYTES = 1024 * 1024;

/**
 * A dataset for a request: a file path (sent inline or uploaded, by size), or a DatasetSource
 * as the proto defines it, e.g. `{ source: { case: "datasetId", value: id } }`.
 */
export type DatasetInput = string | MessageInitShape<typeof DatasetSourceSchema>;

type UploadRequest = MessageInitShape<typeof UploadDatasetRequestSchema>;

/** The lowercase hex SHA-256 and the size of a file, read as a stream. */
export async function hashFile(path: string): Promise<{ sha256: string; sizeBytes: bigint }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { sha256: hash.digest("hex"), sizeBytes: BigInt(size) };
}

/** The UploadDataset stream for a file: a header with its hash and size, then its chunks. */
export async function* uploadRequests(
  path: string,
  chunkBytes: number,
  fileName: string = basename(path),
): AsyncGenerator<UploadRequest> {
  const { sha256, sizeBytes } = await hashFile(path);
  yield { header: { fileName, sha256, sizeBytes } };
  // A file stream yields chunks of exactly highWaterMark bytes, the last one shorter.
  for await (const chunk of createReadStream(path, { highWaterMark: chunkBytes }) as AsyncIterable<Buffer>) {
    yield { chunk };
  }
}
