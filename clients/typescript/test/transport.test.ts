// The retry bounds, against a port where nothing listens: StartTraining repeated with one
// request id, and a watch that gives up, each a bounded number of times. (The bearer token and
// TLS are tested against the real server with --secure in secure.test.ts.)

import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, FineTuneClient, FineTuneError, type Interceptor } from "@fileengine/finetune";

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
      return true;
    });
    assert.equal(seen.length, 3);
    assert.match(seen[0], /^[0-9a-f-]{36}$/);
    assert.deepEqual(new Set(seen), new Set([seen[0]]), "one request id for every attempt");
  });

  test("a watch reconnects a bounded number of times, then throws", async (t) => {
    const seen: string[] = [];
    const reconnects: string[] = [];
    const client = new FineTuneClient({
      address: deadAddress,
      interceptors: [counting(seen)],
      retry: { maxAttempts: 4, initialDelayMs: 5, maxDelayMs: 20 },
    });
    t.after(() => client.close());
    const watch = client.watch("job-1", {
      afterSequence: 7n,
      onReconnect: ({ attempt, afterSequence }) => reconnects.push(`${attempt}@${afterSequence}`),
    });
    await assert.rejects(
      (async () => {
        for await (const _ of watch) {
          assert.fail("no event can arrive");
        }
      })(),
      (e: unknown) => e instanceof FineTuneError && e.code === Code.Unavailable,
    );
    assert.deepEqual(reconnects, ["1@7", "2@7", "3@7"]);
    assert.deepEqual(seen, ["WatchJob", "WatchJob", "WatchJob", "WatchJob"]);
  });
});
