// CompletionStream: StreamComplete as the text it generates, with the final Completion kept
// aside for after the loop.

import type { MessageInitShape } from "@bufbuild/protobuf";
import type { CallOptions, Client } from "@connectrpc/connect";
import type {
  CompleteRequestSchema,
  Completion,
} from "./gen/fileengine/finetune/v1/completion_pb.js";
import type { FineTuneService } from "./gen/fileengine/finetune/v1/service_pb.js";
import { toFineTuneError } from "./errors.js";
import { StoppableStream } from "./stoppable.js";

/** Complete's request as a plain object. */
export type CompleteRequestInit = Omit<MessageInitShape<typeof CompleteRequestSchema>, "$typeName">;

/**
 * An answer as it is generated: `for await` yields its text in pieces (`string`); after the
 * loop, `completion` is the final Completion (its `text` is the pieces joined; usage, cost,
 * finish reason). The request is sent when the loop starts. Iterate it once.
 */
export class CompletionStream extends StoppableStream<string> {
  /** The final Completion, once the loop has ended; undefined before, or after `stop()`. */
  completion: Completion | undefined = undefined;

  constructor(
    private readonly client: Client<typeof FineTuneService>,
    private readonly request: CompleteRequestInit,
    private readonly options: CallOptions = {},
  ) {
    super(options.signal);
  }

  protected async *run(): AsyncGenerator<string, void, undefined> {
    const options = { ...this.options, signal: this.signal };
    try {
      for await (const res of this.client.streamComplete({ request: this.request }, options)) {
        if (this.stopped) {
          return; // items that arrived before stop() are dropped
        } else if (res.item.case === "delta") {
          yield res.item.value;
        } else if (res.item.case === "completion") {
          this.completion = res.item.value;
        }
      }
    } catch (err) {
      if (this.stopped) {
        return;
      }
      throw toFineTuneError(err);
    }
    if (this.completion === undefined && !this.stopped) {
      throw new Error("the service sent no StreamCompleteResponse completion");
    }
  }
}
