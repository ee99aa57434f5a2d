// The retry bounds, against a port where nothing listens: StartTraining repeated with one
// request id a bounded number of times or until the caller's deadline (the error carries the
// id), and a watch that resumes for its time budget, then gives up. (The bearer token and TLS
// are tested against the real server with --secure in secure.test.ts.)

import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  Code,
  FineTuneClient,
  FineTuneError,
  type Interceptor,
  type WatchOptions,
} from "@fileengine/finetune";

describe("retries on UNAVAILABLE", () => {
  let deadAddress: string;
  let dir: string;
  let dataset: string;

  before(async () => {
    // A port that was just free: connections to it are refused (UNAVAILABLE).
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    deadAddress = `127.0.0.1:${(probe.address() as AddressInfo).port}`;
    await new Promise((resolve) => probe.close(resolve));
    dir = await mkdtemp(join(tmpdir(), "finetune-retry-"));
    dataset = join(dir, "one.jsonl");
    await writeFile(dataset, '{"messages": [{"role": "user", "content": "Hi"}]}\n');
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // Records each attempt: the request id of a unary call, the method name of a stream.
  function counting(attempts: string[]): Interceptor {
    return (next) => (req) => {
      attempts.push(req.stream ? req.method.name : (req.message as unknown as { requestId: string }).requestId);
      return next(req);
    };
  }

  test("StartTraining is repeated with the same request id, a bounded number of times", async (t) => {
    const seen: string[] = [];
    const client = new FineTuneClient({
      address: deadAddress,
      interceptors: [counting(seen)],
      retry: { maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 20 },
    });
    t.after(() => client.close());
    await assert.rejects(client.startTraining({ training: dataset }), (e: unknown) => {
      assert.ok(e instanceof FineTuneError, String(e));
      assert.equal(e.code, Code.Unavailable);
      assert.equal(e.codeName, "UNAVAILABLE");
      assert.match(e.message, /^UNAVAILABLE: /);
      assert.equal(e.requestId, seen[0], "the error carries the generated request id");
      return true;
    });
    assert.equal(seen.length, 3);
    assert.match(seen[0], /^[0-9a-f-]{36}$/);
    assert.deepEqual(new Set(seen), new Set([seen[0]]), "one request id for every attempt");
  });

  test("StartTraining's retries end at the caller's deadline, long before their 60 s budget", { timeout: 20_000 }, async (t) => {
    const seen: string[] = [];
    const client = new FineTuneClient({ address: deadAddress, interceptors: [counting(seen)] });
    t.after(() => client.close());
    await assert.rejects(client.startTraining({ training: dataset }, { timeoutMs: 1_500 }), (e: unknown) => {
      assert.ok(e instanceof FineTuneError, String(e));
      assert.equal(e.codeName, "UNAVAILABLE", "the last failure, not a deadline of our own");
      assert.equal(e.requestId, seen[0]);
      return true;
    });
    assert.ok(seen.length > 1, `retried before the deadline: ${seen.length} attempts`);
  });

  async function watchFails(client: FineTuneClient, options: WatchOptions): Promise<void> {
    await assert.rejects(
      (async () => {
        for await (const _ of client.watchJob("job-1", options)) {
          assert.fail("no event can arrive");
        }
      })(),
      (e: unknown) => e instanceof FineTuneError && e.code === Code.Unavailable,
    );
  }

  test("a watch resumes until its time budget is spent, then throws the last error", async (t) => {
    const seen: string[] = [];
    const reconnects: string[] = [];
    // The client's StartTraining retry policy does not limit watches.
    const client = new FineTuneClient({
      address: deadAddress,
      interceptors: [counting(seen)],
      retry: { maxAttempts: 1 },
      watchResume: { initialDelayMs: 5, maxDelayMs: 20, budgetMs: 300 },
    });
    t.after(() => client.close());
    await watchFails(client, {
      afterSequence: 7n,
      onReconnect: ({ attempt, afterSequence }) => reconnects.push(`${attempt}@${afterSequence}`),
    });
    assert.ok(reconnects.length >= 3, `several resumes within the budget: ${reconnects}`);
    assert.deepEqual(
      reconnects,
      reconnects.map((_, i) => `${i + 1}@7`),
      "each resume after the same sequence, counted",
    );
    assert.equal(seen.length, reconnects.length + 1);
    assert.ok(seen.every((m) => m === "WatchJob"));
  });

  test("the deprecated watch retry.maxAttempts still bounds the resumes", async (t) => {
    const seen: string[] = [];
    const client = new FineTuneClient({ address: deadAddress, interceptors: [counting(seen)] });
    t.after(() => client.close());
    await watchFails(client, { retry: { maxAttempts: 4, initialDelayMs: 5, maxDelayMs: 20 } });
    assert.deepEqual(seen, ["WatchJob", "WatchJob", "WatchJob", "WatchJob"]);
  });
});
