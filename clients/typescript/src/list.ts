// JobList: every job, newest first, fetched a page at a time as the loop goes; for one release
// also awaitable to the first page, which is what listJobs() returned in 0.1.0.

import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  Job,
  JobState,
  ListJobsRequestSchema,
  ListJobsResponse,
} from "./gen/fileengine/finetune/v1/job_pb.js";
import { warnDeprecated } from "./deprecation.js";

/** ListJobs' fields as a plain object: `pageSize`, `pageToken`, `state`. */
export type ListJobsPageRequest = Omit<MessageInitShape<typeof ListJobsRequestSchema>, "$typeName">;

/** What `listJobs()` lists. */
export interface ListJobsOptions {
  /** Only jobs in this state (default: every state). */
  state?: JobState;
  /** Jobs per ListJobs call, 1..100 (default 0: the server's 20). The loop yields them all. */
  pageSize?: number;
  /**
   * @deprecated Start after an earlier page. Kept for one release, for 0.1.0's
   * `await listJobs({pageToken})`: use `listJobsPage()`.
   */
  pageToken?: string;
}

/**
 * Every job (of `state`, when given), newest first: `for await (const job of client.listJobs())`.
 * Each loop starts from the first page again and calls ListJobs as it needs the next page.
 */
export class JobList implements AsyncIterable<Job>, PromiseLike<ListJobsResponse> {
  private firstPage: Promise<ListJobsResponse> | undefined;

  constructor(
    private readonly fetchPage: (request: ListJobsPageRequest) => Promise<ListJobsResponse>,
    private readonly request: ListJobsOptions,
  ) {}

  async *[Symbol.asyncIterator](): AsyncIterator<Job> {
    let pageToken = this.request.pageToken ?? "";
    do {
      const page = await this.fetchPage({ ...this.request, pageToken });
      yield* page.jobs;
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }

  /**
   * @deprecated `await client.listJobs()` is the first page, as in 0.1.0, for one release:
   * iterate the list instead (`for await`), or call `listJobsPage()` for one page. Beware that
   * anything that awaits this object gets the page, not the list: `return client.listJobs()`
   * from an async function, `Promise.resolve(list)`, `Promise.all([list])`.
   */
  then<TResult1 = ListJobsResponse, TResult2 = never>(
    onfulfilled?: ((page: ListJobsResponse) => TResult1 | PromiseLike<TResult1>) | null,
    onrejected?: ((reason: unknown) => TResult2 | PromiseLike<TResult2>) | null,
  ): Promise<TResult1 | TResult2> {
    warnDeprecated(
      "FINETUNE_LIST_JOBS_AWAIT",
      "await client.listJobs() (one page) is deprecated: iterate it with for await (every job), " +
        "or call client.listJobsPage() for one page",
    );
    this.firstPage ??= this.fetchPage(this.request);
    return this.firstPage.then(onfulfilled, onrejected);
  }
}
