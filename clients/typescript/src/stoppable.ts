// The one-shot streams the client hands out (JobWatch, CompletionStream): iterated once, and
// stoppable from outside the loop, which then ends without an error.

/** A stream read by one `for await`; `stop()` cancels its call and ends that loop quietly. */
export abstract class StoppableStream<T> implements AsyncIterable<T> {
  /** The caller's signal and `stop()` together: what the stream's calls listen to. */
  protected readonly signal: AbortSignal;
  private readonly stopper = new AbortController();
  private items: AsyncGenerator<T, void, undefined> | undefined;

  protected constructor(callerSignal: AbortSignal | undefined) {
    this.signal = callerSignal
      ? AbortSignal.any([callerSignal, this.stopper.signal])
      : this.stopper.signal;
  }

  /** The same iterator each time: a second loop carries on where the first left off. */
  [Symbol.asyncIterator](): AsyncIterator<T> {
    this.items ??= this.run();
    return this.items;
  }

  /** Stops: the open call is cancelled, and the loop ends without an error. */
  stop(): void {
    this.stopper.abort();
  }

  /** Whether `stop()` was called: the stream then returns instead of yielding or throwing. */
  protected get stopped(): boolean {
    return this.stopper.signal.aborted;
  }

  protected abstract run(): AsyncGenerator<T, void, undefined>;
}
