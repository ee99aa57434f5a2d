// What the client puts on the wire: the bearer token, and TLS with a CA file. The FineTune
// server checks neither, so a bare node:http2 server stands in for it here: it records each
// request's headers and answers UNIMPLEMENTED. Nothing of the service is imitated. Then the
// retry bounds, against a port where nothing listens.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, FineTuneClient, FineTuneError, type Interceptor } from "@fileengine/finetune";

type Recorder = { server: http2.Http2Server | http2.Http2SecureServer; requests: http2.IncomingHttpHeaders[] };

function record(server: http2.Http2Server | http2.Http2SecureServer): Recorder {
  const requests: http2.IncomingHttpHeaders[] = [];
  // close() waits for the clients' connections to end: the tests close their clients.
  server.on("stream", (stream, headers) => {
    requests.push(headers);
    // A gRPC "trailers-only" response.
    stream.respond(
      { ":status": 200, "content-type": "application/grpc", "grpc-status": "12", "grpc-message": "recorded" },
      { endStream: true },
    );
  });
  return { server, requests };
}

async function listen(rec: Recorder): Promise<number> {
  await new Promise<void>((resolve) => rec.server.listen(0, "127.0.0.1", resolve));
  return (rec.server.address() as AddressInfo).port;
}

async function close(rec: Recorder | undefined): Promise<void> {
  await new Promise((resolve) => (rec ? rec.server.close(resolve) : resolve(undefined)));
}

async function callError(client: FineTuneClient): Promise<FineTuneError> {
  const err = await client.getJob("job-1").then(
    () => assert.fail("the recorder answers every call with an error"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof FineTuneError, String(err));
  return err;
}

describe("transport", () => {
  let plain: Recorder;
  let plainPort: number;

  before(async () => {
    plain = record(http2.createServer());
    plainPort = await listen(plain);
  });

  after(async () => {
    await close(plain);
  });

  test("sends the bearer token on every call", async (t) => {
    const client = new FineTuneClient({ address: `127.0.0.1:${plainPort}`, token: "s3cret" });
    t.after(() => client.close());
    plain.requests.length = 0;
    const err = await callError(client);
    assert.equal(err.code, Code.Unimplemented);
    await callError(client);
    assert.equal(plain.requests.length, 2);
    for (const headers of plain.requests) {
      assert.equal(headers.authorization, "Bearer s3cret");
      assert.equal(headers[":path"], "/fileengine.finetune.v1.FineTuneService/GetJob");
    }
  });

  test("sends no authorization header without a token", async (t) => {
    const client = new FineTuneClient({ address: `http://127.0.0.1:${plainPort}` });
    t.after(() => client.close());
    plain.requests.length = 0;
    await callError(client);
    assert.equal(plain.requests[0].authorization, undefined);
  });

  describe("TLS", () => {
    let dir: string;
    let secure: Recorder | undefined;
    let port: number;
    let caFile: string;
    let noTls = "";

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "finetune-tls-"));
      caFile = join(dir, "cert.pem");
      const keyFile = join(dir, "key.pem");
      try {
        // A self-signed certificate for localhost, valid one day.
        execFileSync(
          "openssl",
          ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", keyFile, "-out", caFile, "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost"],
          { stdio: "ignore" },
        );
      } catch (e) {
        noTls = `openssl could not make a test certificate: ${e}`;
        return;
      }
      secure = record(
        http2.createSecureServer({ key: await readFile(keyFile), cert: await readFile(caFile) }),
      );
      port = await listen(secure);
    });

    after(async () => {
      await close(secure);
      await rm(dir, { recursive: true, force: true });
    });

    test("connects with a CA file and sends the token", async (t) => {
      if (!secure) {
        return t.skip(noTls);
      }
      const client = new FineTuneClient({ address: `localhost:${port}`, tls: { caFile }, token: "t" });
      t.after(() => client.close());
      secure.requests.length = 0;
      const err = await callError(client);
      assert.equal(err.code, Code.Unimplemented, "the call reached the server over TLS");
      assert.equal(secure.requests[0][":scheme"], "https");
      assert.equal(secure.requests[0].authorization, "Bearer t");
    });

    test("refuses a server the roots do not vouch for", async (t) => {
      if (!secure) {
        return t.skip(noTls);
      }
      const client = new FineTuneClient({ address: `https://localhost:${port}` });
      t.after(() => client.close());
      secure.requests.length = 0;
      const err = await callError(client);
      assert.notEqual(err.code, Code.Unimplemented);
      assert.match(err.message, /self[- ]signed|certificate/i);
      assert.equal(secure.requests.length, 0);
    });
  });
});

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
