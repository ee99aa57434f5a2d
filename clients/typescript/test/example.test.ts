// The example program runs end to end against the real server, so it cannot rot.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { startHarness, type Harness } from "./harness.js";

const pipeline = fileURLToPath(new URL("../examples/pipeline.js", import.meta.url));

let harness: Harness;
before(async () => {
  harness = await startHarness();
});
after(async () => {
  await harness?.stop();
});

test("examples/pipeline.ts validates, trains, watches and tests", async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [pipeline, harness.sampleDataset], {
    env: { ...process.env, FINETUNE_ADDR: harness.address },
    timeout: 120_000,
  });
  assert.match(stdout, /training-data\.jsonl: 13 examples, 17692 tokens, 7 epochs, estimated \$3\.10/);
  assert.match(stdout, /started job-/);
  assert.match(stdout, /state succeeded/);
  assert.match(stdout, /succeeded: ft:gpt-4o-2024-08-06:[^ ]*file-engine[^ ]* \(\d+ trained tokens, \$\d+\.\d\d; estimate 123844 tokens, \$3\.10\)/);
  assert.match(stdout, /answered \d+ tokens/);
});
