// The pipeline against the real server: train, watch to completion through a cut connection,
// resume positions, then serve the trained model (complete and stream-complete), and the
// service's typed errors on the way.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  ChatRole,
  Code,
  FineTuneClient,
  FineTuneError,
  JobEventKind,
  JobState,
  isTerminal,
  type Job,
  type JobEvent,
  type Interceptor,
  type WatchJobRequest,
} from "@fileengine/finetune";
import { startHarness, type Harness } from "./harness.js";
import { assertCost } from "./prices.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("pipeline", () => {
  let harness: Harness;
  let client: FineTuneClient;
  let job: Job; // the trained job, once "watches a job to completion" has run
  let events: JobEvent[];

  before(async () => {
    harness = await startHarness();
    client = new FineTuneClient({ address: harness.address });
  });

  after(async () => {
    await harness?.stop();
  });

  test("starts training with a generated request id, idempotently", async () => {
    // 20 epochs instead of the automatic 7: the job runs ~3 s on the harness's clock, ample
    // time for the watch test to cut its stream while the job is still running.
    const started = await client.startTraining({
      training: harness.sampleDataset,
      suffix: "ts-sdk",
      hyperparameters: { nEpochs: 20 },
    });
    job = started.job;
    assert.match(job.requestId, UUID);
    assert.match(job.id, /^job-/);
    assert.equal(started.report?.training?.examples, 13n);
    assert.ok(!isTerminal(job.state), `a new job is not finished: ${JobState[job.state]}`);

    const repeated = await client.startTraining({
      training: harness.sampleDataset,
      suffix: "ts-sdk",
      hyperparameters: { nEpochs: 20 },
      requestId: job.requestId,
    });
    assert.equal(repeated.job?.id, job.id, "the same request_id returns the same job");

    const reused = await client
      .startTraining({ training: harness.sampleDataset, suffix: "other", requestId: job.requestId })
      .then(() => assert.fail("a request_id was reused for other parameters"), (e: unknown) => e);
    assert.ok(reused instanceof FineTuneError);
    assert.equal(reused.code, Code.AlreadyExists);
    assert.equal(reused.reason, "REQUEST_ID_REUSED");
  });

  test("watches a job to completion, resuming once after the connection is cut", async (t) => {
    // Records the after_sequence of each WatchJob request the client sends.
    const requested: bigint[] = [];
    const recordWatchRequests: Interceptor = (next) => (req) => {
      if (!req.stream || req.method.name !== "WatchJob") {
        return next(req);
      }
      const messages = req.message as AsyncIterable<WatchJobRequest>;
      async function* tap() {
        for await (const m of messages) {
          requested.push(m.afterSequence);
          yield m;
        }
      }
      return next({ ...req, message: tap() });
    };
    const watcher = new FineTuneClient({ address: harness.address, interceptors: [recordWatchRequests] });
    t.after(() => watcher.close());

    const reconnects: { afterSequence: bigint; lastYielded: bigint; error: unknown }[] = [];
    events = [];
    let cut = 0;
    const watch = watcher.watchJob(job.id, {
      onReconnect: ({ afterSequence, error }) =>
        reconnects.push({ afterSequence, lastYielded: events.at(-1)?.sequence ?? 0n, error }),
    });
    for await (const event of watch) {
      events.push(event);
      if (events.length === 1) {
        // The job has barely started (it runs for seconds): its stream is live.
        assert.ok(!(event.job && isTerminal(event.job.state)));
        cut = await harness.cut();
      }
    }
    assert.ok(cut >= 1, "the cut closed the watch's connection");
    assert.equal(reconnects.length, 1, "exactly one resume after one cut");
    assert.equal(watch.resumes, 1);
    assert.equal(reconnects[0].afterSequence, reconnects[0].lastYielded, "resumed after the last event seen");
    assert.deepEqual(requested, [0n, reconnects[0].lastYielded], "WatchJob from 0, then from the last event");

    const sequences = events.map((e) => e.sequence);
    assert.equal(sequences[0], 1n);
    sequences.forEach((s, i) => assert.equal(s, BigInt(i + 1), `event ${i} has sequence ${s}`));
    assert.ok(events.length > 20, `a training job has many events, got ${events.length}`);
    assert.ok(events.some((e) => e.kind === JobEventKind.METRICS));

    const last = events.at(-1)!;
    assert.equal(last.kind, JobEventKind.STATE_CHANGED);
    assert.equal(last.job?.state, JobState.SUCCEEDED);
    assert.match(last.job?.fineTunedModel ?? "", /^ft:/);
    job = last.job!;
    assert.equal(job.lastSequence, last.sequence);
    assert.equal(watch.job, last.job, "the watch's job is the final snapshot");
    assert.equal(watch.lastSequence, last.sequence);
    assert.ok((await harness.connections()).accepted >= 2, "the resume used a new connection");
  });

  test("resumes from any sequence and ends at once when nothing is left", async () => {
    const total = BigInt(events.length);
    const tail: bigint[] = [];
    for await (const event of client.watchJob(job.id, { afterSequence: total - 3n })) {
      tail.push(event.sequence);
    }
    assert.deepEqual(tail, [total - 2n, total - 1n, total]);

    const snapshots: Job[] = [];
    const none: JobEvent[] = [];
    for await (const event of client.watchJob(job.id, {
      afterSequence: total,
      onSnapshot: (s) => snapshots.push(s),
    })) {
      none.push(event);
    }
    assert.equal(none.length, 0);
    assert.equal(snapshots.length, 1);
    assert.equal(snapshots[0].state, JobState.SUCCEEDED);
  });

  test("reads the job back", async () => {
    const got = await client.getJob(job.id);
    assert.equal(got.state, JobState.SUCCEEDED);
    assert.equal(got.fineTunedModel, job.fineTunedModel);
    assert.ok(got.trainedTokens > 0n);
    const listed: string[] = [];
    for await (const j of client.listJobs({ state: JobState.SUCCEEDED })) {
      listed.push(j.id);
    }
    assert.ok(listed.includes(job.id));
  });

  test("a tier without a model is FAILED_PRECONDITION until a model is promoted", async () => {
    const err = await client
      .complete({ tier: "fast", messages: [{ role: ChatRole.USER, content: "Hello" }] })
      .then(() => assert.fail("the fast tier answered before a promotion"), (e: unknown) => e);
    assert.ok(err instanceof FineTuneError);
    assert.equal(err.code, Code.FailedPrecondition);
    assert.equal(err.codeName, "FAILED_PRECONDITION");
    assert.match(err.message, /^FAILED_PRECONDITION \(TIER_HAS_NO_MODEL\): /);
    assert.equal(err.reason, "TIER_HAS_NO_MODEL");
  });

  test("completes on the trained model after promoting it to the fast tier", async () => {
    const promoted = await client.promoteModel("fast", { jobId: job.id });
    assert.equal(promoted.tier?.model, job.fineTunedModel);

    const completion = await client.complete({
      tier: "fast",
      messages: [{ role: ChatRole.USER, content: "Build me a landing page with dark theme" }],
    });
    assert.equal(completion.model, job.fineTunedModel);
    assert.equal(completion.tier, "fast");
    assert.ok(completion.text.length > 0);
    // The job trained the default base model; its fine-tuned model bills at its own price.
    assertCost(completion, "gpt-4o-2024-08-06", true);
    assert.ok(completion.responseId.length > 0);
  });

  test("streams a completion: text deltas, then the completion with their text", async () => {
    const deltas: string[] = [];
    const stream = client.streamComplete({
      tier: "fast",
      messages: [{ role: ChatRole.USER, content: "Explain flexbox in one paragraph" }],
    });
    for await (const text of stream) {
      assert.equal(stream.completion, undefined, "no completion before the last delta");
      deltas.push(text);
    }
    assert.ok(deltas.length > 1, `several deltas, got ${deltas.length}`);
    const completion = stream.completion;
    assert.ok(completion);
    assert.equal(completion.text, deltas.join(""));
    assert.equal(completion.model, job.fineTunedModel);
    assertCost(completion, "gpt-4o-2024-08-06", true);
  });

  test("completes on the pro tier", async () => {
    const completion = await client.complete({
      tier: "pro",
      messages: [{ role: ChatRole.USER, content: "Build me a landing page with dark theme" }],
      maxOutputTokens: 256,
    });
    assert.equal(completion.tier, "pro");
    assert.ok(completion.text.length > 0);
    assertCost(completion, "claude-sonnet-5-5");
  });

  test("bad input is INVALID_ARGUMENT with the field violations", async () => {
    const err = await client
      .complete({ tier: "fast", messages: [] })
      .then(() => assert.fail("an empty conversation was accepted"), (e: unknown) => e);
    assert.ok(err instanceof FineTuneError);
    assert.equal(err.code, Code.InvalidArgument);
    assert.deepEqual(
      err.fieldViolations.map((v) => v.field),
      ["messages"],
    );
    assert.ok(err.fieldViolations[0].description.length > 0);
  });

  test("an unknown job is NOT_FOUND and a finished one cannot be cancelled", async () => {
    const missing = await client.getJob("job-does-not-exist").then(
      () => assert.fail("found a job that does not exist"),
      (e: unknown) => e,
    );
    assert.ok(missing instanceof FineTuneError);
    assert.equal(missing.code, Code.NotFound);
    assert.equal(missing.reason, "JOB_NOT_FOUND");

    await assert.rejects(client.cancelJob(job.id), (e: unknown) => {
      assert.ok(e instanceof FineTuneError);
      assert.equal(e.code, Code.FailedPrecondition);
      assert.equal(e.reason, "JOB_FINISHED");
      return true;
    });
  });
});
