// Datasets against the real server: validation inline and through UploadDataset, a bad file's
// report, and StartTraining's typed refusal of it.

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  Code,
  DatasetFormat,
  ERROR_DOMAIN,
  FineTuneClient,
  FineTuneError,
  Severity,
  hashFile,
} from "@fileengine/finetune";
import { startHarness, writeBadDataset, type Harness } from "./harness.js";

describe("datasets", () => {
  let harness: Harness;
  let client: FineTuneClient;
  let dir: string;
  let badDataset: string;

  before(async () => {
    harness = await startHarness();
    client = new FineTuneClient({ address: harness.address });
    dir = await mkdtemp(join(tmpdir(), "finetune-ts-"));
    badDataset = await writeBadDataset(dir);
  });

  after(async () => {
    await harness?.stop();
    if (dir) {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("validates the sample dataset inline", async () => {
    const report = await client.validateDataset(harness.sampleDataset);
    assert.equal(report.format, DatasetFormat.CHAT);
    assert.equal(report.training?.examples, 13n);
    assert.equal(report.training?.lines, 13n);
    assert.equal(report.errorCount, 0n);
    assert.ok(report.warningCount > 0n, "the sample has warnings (few examples)");
    assert.ok(report.problems.every((p) => p.severity === Severity.WARNING));
    assert.equal(report.epochs, 7);
    assert.ok(report.estimatedCostUsd > 0);
  });

  test("validates through UploadDataset above the inline limit, in chunks", async () => {
    const { sha256, sizeBytes } = await hashFile(harness.sampleDataset);
    // A limit of 0 sends every file through UploadDataset; 4 KiB chunks make ~19 of them.
    const uploading = new FineTuneClient({
      address: harness.address,
      inlineLimitBytes: 0,
      uploadChunkBytes: 4096,
    });
    const source = await uploading.datasetSource(harness.sampleDataset);
    assert.deepEqual(source.source, { case: "datasetId", value: sha256 });

    const report = await uploading.validateDataset(harness.sampleDataset);
    const inline = await client.validateDataset(harness.sampleDataset);
    assert.equal(report.training?.sha256, sha256);
    assert.equal(report.training?.sizeBytes, sizeBytes);
    assert.equal(report.training?.examples, 13n);
    assert.equal(report.billedTokens, inline.billedTokens);

    const again = await uploading.uploadDataset(harness.sampleDataset);
    assert.equal(again.datasetId, sha256);
    assert.equal(again.sizeBytes, sizeBytes);
    assert.equal(again.alreadyPresent, true);
  });

  test("reports a bad dataset's problems without failing the call", async () => {
    const report = await client.validateDataset(badDataset);
    const errors = report.problems.filter((p) => p.severity === Severity.ERROR);
    assert.equal(report.errorCount, BigInt(errors.length));
    const invalidJson = errors.find((p) => p.code === "invalid_json");
    assert.ok(invalidJson, `no invalid_json problem in ${JSON.stringify(errors.map((p) => p.code))}`);
    assert.equal(invalidJson.line, 2);
    // One example is also too few to train on.
    assert.ok(errors.some((p) => p.code === "too_few_examples" && p.line === 0));
  });

  test("StartTraining refuses a bad dataset with a typed error", async () => {
    const err = await client.startTraining({ training: badDataset }).then(
      () => assert.fail("StartTraining accepted an invalid dataset"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof FineTuneError, `not a FineTuneError: ${err}`);
    assert.equal(err.code, Code.FailedPrecondition);
    assert.equal(err.codeName, "FAILED_PRECONDITION");
    assert.equal(err.reason, "DATASET_INVALID");
    assert.equal(err.domain, ERROR_DOMAIN);
    // Each problem is a precondition violation: type = problem code, subject = dataset:line.
    const subjects = err.preconditionViolations.map((v) => `${v.type} ${v.subject}`);
    assert.ok(subjects.includes("invalid_json training:2"), subjects.join(", "));
    assert.ok(subjects.includes("too_few_examples training:0"), subjects.join(", "));
    assert.match(err.message, /^FAILED_PRECONDITION \(DATASET_INVALID\): /);
  });

  test("a missing file is the file system's error, before any call", async () => {
    await assert.rejects(client.validateDataset(join(dir, "missing.jsonl")), { code: "ENOENT" });
  });
});
