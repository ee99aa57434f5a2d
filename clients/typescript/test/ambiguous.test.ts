// Ambiguous creates through the SDK: OpenAI's answer to a create is lost or unreadable, the
// caller's deadline passes mid-create, or several callers race with one request id. Each
// case must end with exactly one job at the emulated OpenAI for the request id, tracked by
// the service, whose poller takes it to SUCCEEDED. The tests do only what the README says a
// caller does: use the client as it is (it retries UNAVAILABLE with the same request id),
// and after an error it threw (such as DEADLINE_EXCEEDED) call again with the same id.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, afterEach, before, describe, test } from "node:test";
import { Code, FineTuneClient, FineTuneError, JobState, type Job } from "@fileengine/finetune";
import { startHarness, type Harness } from "./harness.js";

const CREATE_JOB = "POST /v1/fine_tuning/jobs";
const LIST_JOBS = "GET /v1/fine_tuning/jobs";

describe("ambiguous creates", () => {
  let harness: Harness;
  let client: FineTuneClient;

  before(async () => {
    harness = await startHarness();
    client = new FineTuneClient({ address: harness.address });
  });

  afterEach(async () => {
    await harness.clearFaults();
  });

  after(async () => {
    await harness?.stop();
  });

  /** The emulated OpenAI holds exactly this job for its request id; its poller finishes it. */
  async function assertOneTrackedJob(job: Job): Promise<void> {
    assert.ok(job.upstreamId, `the job has an upstream id: ${job.id}`);
    assert.deepEqual(await harness.upstreamJobs(job.requestId), [job.upstreamId]);
    let last = 0n;
    for await (const event of client.watchJob(job.id)) {
      assert.equal(event.sequence, last + 1n, "every event once, in order");
      last = event.sequence;
    }
    const done = await client.getJob(job.id);
    assert.equal(done.state, JobState.SUCCEEDED, JobState[done.state]);
    assert.equal(done.upstreamId, job.upstreamId);
  }

  async function startTraining(requestId: string, via = client, timeoutMs?: number): Promise<Job> {
    const started = await via.startTraining(
      { training: harness.sampleDataset, requestId },
      timeoutMs === undefined ? undefined : { timeoutMs },
    );
    return started.job;
  }

  for (const kind of ["malformed_json", "lost_response"]) {
    test(`a ${kind} create answer makes one tracked job`, async () => {
      await harness.inject(CREATE_JOB, kind);
      const requestId = randomUUID();
      const job = await startTraining(requestId);
      assert.equal(job.requestId, requestId);
      await assertOneTrackedJob(job);
    });
  }

  test("an unconfirmed create is UNAVAILABLE with RetryInfo, and retried", async () => {
    // The job is made but its answer is unreadable, and OpenAI's job list fails from then on
    // (the look-up before the create passes) for every look-up the server makes: 2 more
    // creation attempts and the final settle, each a list call tried 3 times.
    await harness.inject(LIST_JOBS, "latency", { ms: 0 });
    await harness.inject(LIST_JOBS, "unavailable", { times: 9 });
    await harness.inject(CREATE_JOB, "malformed_json");
    const requestId = randomUUID();
    const impatient = new FineTuneClient({ address: harness.address, retry: { maxAttempts: 1 } });
    const error = await startTraining(requestId, impatient).then(
      () => assert.fail("the outcome could not be known"),
      (e: unknown) => e,
    );
    assert.ok(error instanceof FineTuneError);
    assert.equal(error.code, Code.Unavailable);
    assert.equal(error.reason, "UPSTREAM_OUTCOME_UNKNOWN");
    assert.ok((error.retryDelayMs ?? 0) > 0, `RetryInfo: ${error.retryDelayMs}`);
    // Called again with the same request id (the default client), the reservation the
    // unconfirmed create kept is settled by the look-up: the one job, not a second.
    await assertOneTrackedJob(await startTraining(requestId));
  });

  test("a deadline passing mid-create, then the request id the error carries gets the job", async () => {
    await harness.inject(CREATE_JOB, "latency", { ms: 3000 });
    // No request id of our own: the client generates one, and the error hands it back.
    const error = await client
      .startTraining({ training: harness.sampleDataset }, { timeoutMs: 1000 })
      .then(
        () => assert.fail("the deadline passed"),
        (e: unknown) => e,
      );
    assert.ok(error instanceof FineTuneError);
    // The client's own timer, or the server's (tonic answers CANCELLED "Timeout expired").
    assert.ok([Code.DeadlineExceeded, Code.Canceled].includes(error.code), error.message);
    assert.match(error.requestId, /^[0-9a-f-]{36}$/);
    // As the README says: call again with the request id the error carries.
    const job = await startTraining(error.requestId);
    assert.equal(job.requestId, error.requestId);
    await assertOneTrackedJob(job);
  });

  test("concurrent calls with one request id on several connections make one job", async () => {
    await harness.inject(CREATE_JOB, "latency", { ms: 1000 });
    const requestId = randomUUID();
    // One client each: each its own HTTP/2 connection.
    const jobs = await Promise.all(
      Array.from({ length: 4 }, () =>
        startTraining(requestId, new FineTuneClient({ address: harness.address })),
      ),
    );
    assert.equal(new Set(jobs.map((j) => `${j.id} ${j.upstreamId}`)).size, 1);
    await assertOneTrackedJob(jobs[0]!);
  });
});
