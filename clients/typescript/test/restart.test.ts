// A watch outlasts a server restart with the client's default policy: the harness stops the
// server for 5 s mid-watch (the stream is cut, and so is every new connection until it is
// back) and starts it again on the same address and data, and the watch carries on to the job's
// end with every event once, in order.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  FineTuneClient,
  JobEventKind,
  JobState,
  type JobEvent,
} from "@fileengine/finetune";
import { startHarness, type Harness } from "./harness.js";

let harness: Harness;
let client: FineTuneClient;

before(async () => {
  harness = await startHarness();
  client = new FineTuneClient({ address: harness.address });
});

after(async () => {
  client?.close();
  await harness?.stop();
});

test("a watch continues through a 5 s server restart, without a gap or a repeat", async () => {
  // 20 epochs: the job is still running when the restart begins a few events in.
  const { job } = await client.startTraining({
    training: harness.sampleDataset,
    suffix: "restart",
    hyperparameters: { nEpochs: 20 },
  });
  const events: JobEvent[] = [];
  const errors: unknown[] = [];
  let wasDown = false;
  for await (const event of client.watchJob(job.id, { onReconnect: ({ error }) => errors.push(error) })) {
    events.push(event);
    if (events.length === 3) {
      await harness.restart(5_000);
      wasDown = !(await harness.up());
    }
  }
  assert.ok(wasDown, "the server was down after the restart call");
  // Through the harness's proxy a connection to the stopped server is accepted, then closed:
  // the client sees its streams cut (CANCELED, ECONNRESET) again and again until it is back.
  assert.ok(errors.length > 1, `resumed more than once while the server was down: ${errors.length}`);
  events.forEach((e, i) => assert.equal(e.sequence, BigInt(i + 1), `event ${i} has sequence ${e.sequence}`));
  const last = events.at(-1)!;
  assert.equal(last.kind, JobEventKind.STATE_CHANGED);
  assert.equal(last.job?.state, JobState.SUCCEEDED);
  assert.equal(last.job?.lastSequence, last.sequence);
  assert.ok(await harness.up());
});
