// The API shape of clients/README.md ("The API, concept by concept"), one test per row of the
// table and named after it, each checking what the TypeScript column claims against the real
// server; the last test covers the names renamed in 0.2.0 and kept for one release.

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as sdk from "@fileengine/finetune";
import {
  ChatRole,
  Code,
  CompletionStream,
  ConnectError,
  DEFAULT_RETRY,
  FineTuneClient,
  FineTuneError,
  JobEventKind,
  JobList,
  JobState,
  JobWatch,
  Rating,
  isTerminal,
  type Completion,
  type Interceptor,
  type Job,
  type JobEvent,
} from "@fileengine/finetune";
import { startHarness, writeBadDataset, type Harness } from "./harness.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const HELLO = [{ role: ChatRole.USER, content: "Explain flexbox in one paragraph" }];

/** What `promise` rejected with; fails when it resolves. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (value) => assert.fail(`expected a failure, got ${String(value)}`),
    (err: unknown) => err,
  );
}

/** The FineTuneError `promise` rejected with. */
async function fineTuneError(promise: Promise<unknown>): Promise<FineTuneError> {
  const err = await rejection(promise);
  assert.ok(err instanceof FineTuneError, `not a FineTuneError: ${String(err)}`);
  return err;
}

/** The events of a watch, to its end. */
async function drain(watch: AsyncIterable<JobEvent>): Promise<JobEvent[]> {
  const events: JobEvent[] = [];
  for await (const event of watch) {
    events.push(event);
  }
  return events;
}

describe("API shape (clients/README.md)", () => {
  let harness: Harness;
  let client: FineTuneClient;
  let dir: string;
  let badDataset: string;
  let trained: Job; // the job of "start", succeeded once "watch" has run
  let served: Completion; // the answer of "complete"

  before(async () => {
    harness = await startHarness();
    client = new FineTuneClient({ address: harness.address });
    dir = await mkdtemp(join(tmpdir(), "finetune-shape-"));
    badDataset = await writeBadDataset(dir);
  });

  after(async () => {
    client?.close();
    await harness?.stop();
    if (dir) {
      await rm(dir, { recursive: true, force: true });
    }
  });

  async function start(suffix: string): Promise<Job> {
    return (await client.startTraining({ training: harness.sampleDataset, suffix })).job;
  }

  test("validate", async () => {
    const report = await client.validateDataset(harness.sampleDataset);
    assert.equal(report.$typeName, "fileengine.finetune.v1.ValidationReport");
    assert.equal(report.errorCount, 0n);
    assert.equal(report.training?.examples, 13n);

    // A DatasetSource works as well as a path.
    const content = await readFile(harness.sampleDataset);
    const fromSource = await client.validateDataset({ source: { case: "content", value: content } });
    assert.equal(fromSource.training?.sha256, report.training?.sha256);

    // A dataset with errors is a report, not an error.
    const bad = await client.validateDataset(badDataset);
    assert.ok(bad.errorCount > 0n);
    assert.ok(bad.problems.some((p) => p.code === "invalid_json" && p.line === 2));
  });

  test("upload", async () => {
    const { sha256, sizeBytes } = await sdk.hashFile(harness.sampleDataset);
    const uploaded = await client.uploadDataset(harness.sampleDataset);
    assert.equal(uploaded.$typeName, "fileengine.finetune.v1.UploadDatasetResponse");
    assert.equal(uploaded.datasetId, sha256);
    assert.equal(uploaded.sizeBytes, sizeBytes);

    // Inline up to the limit (8 MiB by default), uploaded above it.
    const inline = await client.datasetSource(harness.sampleDataset);
    assert.equal(inline.source?.case, "content");
    const uploading = new FineTuneClient({ address: harness.address, inlineLimitBytes: 1024 });
    const big = await uploading.datasetSource(harness.sampleDataset);
    uploading.close();
    assert.deepEqual(big.source, { case: "datasetId", value: sha256 });
  });

  test("start", async () => {
    const started = await client.startTraining({ training: harness.sampleDataset, suffix: "shape" });
    trained = started.job; // typed Job, not Job | undefined
    assert.equal(trained.$typeName, "fileengine.finetune.v1.Job");
    assert.match(trained.requestId, UUID, "the client made a request id");
    assert.equal(started.report?.training?.examples, 13n);
    const again = await client.startTraining({
      training: harness.sampleDataset,
      suffix: "shape",
      requestId: trained.requestId,
    });
    assert.equal(again.job.id, trained.id, "the same request id is the same job");

    // The retry defaults of the row (transport.test.ts checks that they retry and stop).
    assert.deepEqual(
      { ...DEFAULT_RETRY },
      {
        maxAttempts: Number.POSITIVE_INFINITY,
        initialDelayMs: 200,
        maxDelayMs: 5_000,
        budgetMs: 60_000,
      },
    );
  });

  test("get", async () => {
    const job = await client.getJob(trained.id);
    assert.equal(job.$typeName, "fileengine.finetune.v1.Job");
    assert.equal(job.id, trained.id);
    assert.equal(job.requestId, trained.requestId);
  });

  test("list", async () => {
    // More jobs than a page of 2 holds: this one's three, and the jobs of the rows before.
    const mine: string[] = [];
    for (const n of [1, 2, 3]) {
      mine.push((await start(`list-${n}`)).id);
    }
    const calls: string[] = [];
    const countCalls: Interceptor = (next) => (req) => {
      calls.push(req.method.name);
      return next(req);
    };
    const counted = new FineTuneClient({ address: harness.address, interceptors: [countCalls] });
    const listed: Job[] = [];
    for await (const job of counted.listJobs({ pageSize: 2 })) {
      listed.push(job);
    }
    counted.close();
    const ids = listed.map((j) => j.id);
    assert.ok(ids.length >= 4, `every job, not one page: ${ids.length}`);
    assert.equal(new Set(ids).size, ids.length, "each job once");

    // One page: {jobs, nextPageToken}; the token gets the next. Walked by hand, the pages
    // hold what the loop yielded, and the loop made one call per page.
    const pages: string[][] = [];
    let pageToken = "";
    do {
      const page = await client.listJobsPage({ pageSize: 2, pageToken });
      assert.ok(page.jobs.length <= 2);
      pages.push(page.jobs.map((j) => j.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    assert.deepEqual(pages.flat(), ids);
    assert.deepEqual(calls, pages.map(() => "ListJobs"));
    assert.deepEqual(
      ids.filter((id) => mine.includes(id)),
      [...mine].reverse(),
      "newest first",
    );
    assert.ok(ids.includes(trained.id));
    const times = listed.map((j) => j.createTime?.seconds ?? 0n);
    times.forEach((t, i) => assert.ok(i === 0 || t <= times[i - 1], "creation times never increase"));

    // `state` keeps only that state's jobs.
    const none: Job[] = [];
    for await (const job of client.listJobs({ state: JobState.PAUSED })) {
      none.push(job);
    }
    assert.deepEqual(none, []);
  });

  test("cancel", async () => {
    const job = await start("cancel");
    const cancelled = await client.cancelJob(job.id);
    assert.equal(cancelled.$typeName, "fileengine.finetune.v1.Job");
    assert.equal(cancelled.id, job.id);
    const watch = client.watchJob(job.id);
    await drain(watch);
    assert.equal(watch.job?.state, JobState.CANCELLED);
  });

  test("watch", async () => {
    // 20 epochs: the job runs for seconds, so the cut below comes while it is running.
    const { job } = await client.startTraining({
      training: harness.sampleDataset,
      suffix: "watch",
      hyperparameters: { nEpochs: 20 },
    });
    const watch = client.watchJob(job.id);
    assert.ok(watch instanceof JobWatch);
    assert.equal(watch.job, undefined, "no job before the first item");
    assert.equal(watch.resumes, 0);
    assert.equal(watch.lastSequence, 0n);

    // stop() ends the loop without an error, and the job goes on.
    const seen: JobEvent[] = [];
    for await (const event of watch) {
      seen.push(event);
      assert.equal(watch.lastSequence, event.sequence);
      assert.ok(watch.job, "the job, from the snapshot on");
      watch.stop();
    }
    assert.equal(seen.length, 1);

    // afterSequence resumes where that watch stopped; a cut connection is resumed too.
    const rest = client.watchJob(job.id, { afterSequence: watch.lastSequence });
    const events: JobEvent[] = [];
    for await (const event of rest) {
      events.push(event);
      if (events.length === 1) {
        await harness.cut();
      }
    }
    assert.equal(events[0].sequence, 2n);
    events.forEach((e, i) => assert.equal(e.sequence, BigInt(i + 2), "each event once, in order"));
    const last = events.at(-1)!;
    assert.equal(last.kind, JobEventKind.STATE_CHANGED);
    assert.ok(last.job && isTerminal(last.job.state), "ends after the job's terminal event");
    assert.equal(rest.job, last.job, ".job is the latest job");
    assert.equal(rest.job?.state, JobState.SUCCEEDED);
    assert.equal(rest.lastSequence, last.sequence);
    assert.ok(rest.resumes >= 1, `resumed after the cut: ${rest.resumes}`);
    trained = rest.job!;

    // The caller's signal ends it with CANCELED.
    const aborter = new AbortController();
    aborter.abort();
    const err = await fineTuneError(drain(client.watchJob(trained.id, { signal: aborter.signal })));
    assert.equal(err.code, Code.Canceled);
  });

  test("complete", async () => {
    served = await client.complete({ tier: "pro", messages: HELLO, maxOutputTokens: 128 });
    assert.equal(served.$typeName, "fileengine.finetune.v1.Completion");
    assert.equal(served.tier, "pro");
    assert.ok(served.text.length > 0);
    assert.ok(served.responseId.length > 0);
  });

  test("stream", async () => {
    const stream = client.streamComplete({ tier: "pro", messages: HELLO });
    assert.ok(stream instanceof CompletionStream);
    const deltas: string[] = [];
    for await (const text of stream) {
      assert.equal(typeof text, "string");
      deltas.push(text);
    }
    assert.ok(deltas.length > 1, `several deltas: ${deltas.length}`);
    assert.equal(stream.completion?.$typeName, "fileengine.finetune.v1.Completion");
    assert.equal(stream.completion?.text, deltas.join(""));

    const stopped = client.streamComplete({ tier: "pro", messages: HELLO });
    let pieces = 0;
    for await (const _ of stopped) {
      pieces += 1;
      stopped.stop();
    }
    assert.equal(pieces, 1, "stop() ends the loop without an error");
    assert.equal(stopped.completion, undefined);
  });

  test("tiers", async () => {
    const tiers = await client.listTiers();
    assert.ok(Array.isArray(tiers));
    assert.deepEqual(tiers.map((t) => t.name).sort(), ["auto", "fast", "pro"]);
    assert.equal(tiers[0].$typeName, "fileengine.finetune.v1.Tier");
  });

  test("promote", async () => {
    const fromJob = await client.promoteModel("fast", { jobId: trained.id });
    assert.equal(fromJob.tier?.name, "fast");
    assert.equal(fromJob.tier?.model, trained.fineTunedModel);
    assert.equal(fromJob.tier?.promotedFromJob, trained.id);
    const byName = await client.promoteModel("fast", { model: "gpt-4o-mini" });
    assert.equal(byName.tier?.model, "gpt-4o-mini");
    assert.equal(byName.previousModel, trained.fineTunedModel);
  });

  test("feedback", async () => {
    const feedback = await client.recordFeedback(served.responseId, Rating.UP);
    assert.equal(feedback.tier, "pro");
    assert.equal(feedback.arm, "");
  });

  test("stats", async () => {
    const every = await client.getTierStats();
    assert.ok(every.some((s) => s.tier === "pro"));
    const pro = await client.getTierStats("pro");
    assert.ok(pro.length > 0 && pro.every((s) => s.tier === "pro"));
    assert.ok(pro[0].requests >= 2n, `complete and stream: ${pro[0].requests}`);
    assert.equal(pro[0].thumbsUp, 1n);
  });

  test("errors: type", async () => {
    const err = await fineTuneError(client.getJob("job-missing"));
    assert.ok(err instanceof Error);
    assert.equal(err.name, "FineTuneError");
    assert.ok(err.cause instanceof ConnectError);
    // Not the service's failures: a missing file, and the generated client's own errors.
    const missing = await rejection(client.validateDataset(join(dir, "none.jsonl")));
    assert.equal((missing as { code?: string }).code, "ENOENT");
    assert.ok((await rejection(client.raw.getJob({ jobId: "job-missing" }))) instanceof ConnectError);
  });

  test("errors: code", async () => {
    const err = await fineTuneError(client.getJob("job-missing"));
    assert.equal(err.code, Code.NotFound);
    assert.equal(typeof err.code, "number");
    assert.equal(err.codeName, "NOT_FOUND");
    assert.match(err.message, /^NOT_FOUND \(JOB_NOT_FOUND\): /);
  });

  test("errors: reason", async () => {
    const notFound = await fineTuneError(client.getJob("job-missing"));
    assert.equal(notFound.reason, "JOB_NOT_FOUND");

    // No ErrorInfo (nothing listens there): "", not undefined.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const dead = `127.0.0.1:${(probe.address() as AddressInfo).port}`;
    await new Promise((resolve) => probe.close(resolve));
    const nowhere = new FineTuneClient({ address: dead });
    const unavailable = await fineTuneError(nowhere.getJob("job-1"));
    nowhere.close();
    assert.equal(unavailable.code, Code.Unavailable);
    assert.equal(unavailable.reason, "");
    assert.equal(unavailable.domain, "");
  });

  test("errors: retry delay", async () => {
    // OpenAI rate-limits every attempt the server makes (3): the server passes the wait on.
    await harness.inject("POST /v1/chat/completions", "rate_limit", { times: 3, retry_after_ms: 250 });
    const limited = await fineTuneError(client.complete({ model: "gpt-4o-mini", messages: HELLO }));
    await harness.clearFaults();
    assert.equal(limited.code, Code.ResourceExhausted);
    assert.equal(limited.reason, "UPSTREAM_RATE_LIMITED");
    assert.equal(limited.retryDelayMs, 250, "milliseconds");

    const notFound = await fineTuneError(client.getJob("job-missing"));
    assert.equal(notFound.retryDelayMs, undefined);
  });

  test("errors: details", async () => {
    const notFound = await fineTuneError(client.getJob("job-missing"));
    assert.deepEqual({ ...notFound.metadata }, { job_id: "job-missing" });

    const invalid = await fineTuneError(client.complete({ tier: "pro", messages: [] }));
    assert.equal(invalid.code, Code.InvalidArgument);
    assert.deepEqual(invalid.fieldViolations.map((v) => v.field), ["messages"]);
    assert.deepEqual(invalid.preconditionViolations, []);

    const refused = await fineTuneError(client.startTraining({ training: badDataset }));
    assert.equal(refused.reason, "DATASET_INVALID");
    const subjects = refused.preconditionViolations.map((v) => `${v.type} ${v.subject}`);
    assert.ok(subjects.includes("invalid_json training:2"), subjects.join(", "));
    assert.deepEqual(refused.fieldViolations, []);
  });

  test("errors: request id", async () => {
    const made = await fineTuneError(client.startTraining({ training: badDataset }));
    assert.match(made.requestId, UUID, "the id the client made for the start");
    const given = await fineTuneError(client.startTraining({ training: badDataset, requestId: "mine-1" }));
    assert.equal(given.requestId, "", "the caller knows its own id");
    const other = await fineTuneError(client.getJob("job-missing"));
    assert.equal(other.requestId, "");
  });

  test("enums", async () => {
    const enums: Record<string, Record<string, string | number>> = {
      JobState: sdk.JobState,
      JobEventKind: sdk.JobEventKind,
      TrainingMethod: sdk.TrainingMethod,
      FinishReason: sdk.FinishReason,
      ChatRole: sdk.ChatRole,
      Rating: sdk.Rating,
      Provider: sdk.Provider,
      Severity: sdk.Severity,
      DatasetFormat: sdk.DatasetFormat,
    };
    for (const [name, values] of Object.entries(enums)) {
      assert.ok(values, `${name} is exported from the package root`);
      const prefix = name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
      const names = Object.keys(values).filter((k) => Number.isNaN(Number(k)));
      assert.ok(names.includes("UNSPECIFIED"), `${name}: ${names}`);
      assert.ok(names.every((n) => !n.startsWith(`${prefix}_`)), `${name} has short names: ${names}`);
    }
    const job = await client.getJob(trained.id);
    assert.equal(job.state, JobState.SUCCEEDED);
    assert.equal(JobState[job.state], "SUCCEEDED");
    assert.match(sdk.FinishReason[served.finishReason], /^(STOP|LENGTH)$/);
  });

  test("async", async () => {
    // Each call is a promise, each stream an async iterable: nothing blocks.
    const calls: unknown[] = [
      client.getJob(trained.id),
      client.listJobsPage(),
      client.listTiers(),
      client.getTierStats(),
      client.validateDataset(harness.sampleDataset),
    ];
    calls.forEach((c) => assert.ok(c instanceof Promise));
    await Promise.all(calls);
    const streams: AsyncIterable<unknown>[] = [
      client.listJobs(),
      client.watchJob(trained.id),
      client.streamComplete({ tier: "pro", messages: HELLO }),
    ];
    for (const iterable of streams) {
      assert.equal(typeof iterable[Symbol.asyncIterator], "function");
    }
  });

  test("renamed in 0.2.0, kept for one release", async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => {
      if (w.name === "DeprecationWarning") warnings.push(w.code ?? "");
    };
    process.on("warning", onWarning);
    try {
      // watch() is watchJob().
      const old = await drain(client.watch(trained.id));
      const now = await drain(client.watchJob(trained.id));
      assert.deepEqual(old.map((e) => e.sequence), now.map((e) => e.sequence));

      // streamCompleteItems() is 0.1.0's streamComplete: delta items, then one completion.
      const items = [];
      for await (const item of client.streamCompleteItems({ tier: "pro", messages: HELLO })) {
        items.push(item);
      }
      const last = items.pop();
      assert.ok(last?.case === "completion");
      assert.ok(items.length > 1 && items.every((i) => i.case === "delta"));
      assert.equal(last.value.text, items.map((i) => (i.case === "delta" ? i.value : "")).join(""));

      // Awaiting listJobs() is the first page, as listJobsPage() gives it...
      const list = client.listJobs({ pageSize: 2 });
      assert.ok(list instanceof JobList);
      const page = await list;
      const onePage = await client.listJobsPage({ pageSize: 2 });
      assert.deepEqual(page.jobs.map((j) => j.id), onePage.jobs.map((j) => j.id));
      assert.notEqual(page.nextPageToken, "");
      // ...which is also the trap: an async function returning the list returns the page.
      const returned = await (async () => client.listJobs({ pageSize: 2 }))();
      assert.equal(returned.jobs.length, 2);

      // promoteModel({tier, source}) is 0.1.0's form.
      const promoted = await client.promoteModel({
        tier: "fast",
        source: { case: "jobId", value: trained.id },
      });
      assert.equal(promoted.tier?.model, trained.fineTunedModel);

      // Warnings are emitted on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off("warning", onWarning);
    }
    assert.deepEqual(warnings.sort(), [
      "FINETUNE_LIST_JOBS_AWAIT",
      "FINETUNE_PROMOTE_MODEL_REQUEST",
      "FINETUNE_STREAM_COMPLETE_ITEMS",
      "FINETUNE_WATCH",
    ]);
  });
});
