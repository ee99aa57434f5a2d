// Tokens and TLS against the real server: the harness with --secure requires bearer tokens
// (roles read, train, complete) and speaks TLS with a certificate for localhost and 127.0.0.1
// signed by a CA made for the run, through the same cuttable proxy.

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
  type Interceptor,
  type Job,
  type JobEvent,
  type WatchJobRequest,
} from "@fileengine/finetune";
import { startHarness, type SecureHarness } from "./harness.js";

/** The FineTuneError a call failed with (the test fails if it succeeded or threw anything else). */
async function failure(call: Promise<unknown>, what: string): Promise<FineTuneError> {
  const err = await call.then(
    () => assert.fail(`${what} succeeded`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof FineTuneError, `${what}: ${String(err)}`);
  return err;
}

/** Records each call's method and the authorization header the client sent with it. */
function recordAuthorization(seen: { method: string; authorization: string | null }[]): Interceptor {
  return (next) => (req) => {
    seen.push({ method: req.method.name, authorization: req.header.get("authorization") });
    return next(req);
  };
}

describe("secure server (tokens and TLS)", () => {
  let harness: SecureHarness;
  let client: FineTuneClient; // TLS with the run's CA, the token with every role
  const clients: FineTuneClient[] = [];

  function connect(options: Partial<ConstructorParameters<typeof FineTuneClient>[0]>): FineTuneClient {
    const c = new FineTuneClient({ address: harness.address, ...options });
    clients.push(c);
    return c;
  }

  before(async () => {
    harness = await startHarness({ secure: true });
    client = connect({ tls: { caFile: harness.caFile }, token: harness.token });
  });

  after(async () => {
    for (const c of clients) {
      c.close();
    }
    await harness?.stop();
  });

  test("validates the sample dataset over TLS with the token", async () => {
    const report = await client.validateDataset(harness.sampleDataset);
    assert.equal(report.errorCount, 0n);
    assert.equal(report.training?.examples, 13n);
  });

  test("the certificate's DNS name works too (serverName localhost)", async () => {
    const byName = connect({ tls: { caFile: harness.caFile, serverName: "localhost" }, token: harness.token });
    const report = await byName.validateDataset(harness.sampleDataset);
    assert.equal(report.errorCount, 0n);
  });

  test("trains and watches to SUCCEEDED over TLS, resuming with the token after a cut", async () => {
    const started = await client.startTraining({
      training: harness.sampleDataset,
      suffix: "ts-secure",
      hyperparameters: { nEpochs: 20 }, // ~3 s on the harness's clock: time to cut mid-stream
    });
    const job: Job = started.job;
    assert.ok(!isTerminal(job.state), `a new job is not finished: ${JobState[job.state]}`);

    // The after_sequence of each WatchJob request, and the authorization it went with.
    const requested: { afterSequence: bigint; authorization: string | null }[] = [];
    const recordWatchRequests: Interceptor = (next) => (req) => {
      if (!req.stream || req.method.name !== "WatchJob") {
        return next(req);
      }
      const authorization = req.header.get("authorization");
      const messages = req.message as AsyncIterable<WatchJobRequest>;
      async function* tap() {
        for await (const m of messages) {
          requested.push({ afterSequence: m.afterSequence, authorization });
          yield m;
        }
      }
      return next({ ...req, message: tap() });
    };
    const watcher = connect({
      tls: { caFile: harness.caFile },
      token: harness.token,
      interceptors: [recordWatchRequests],
    });
    const acceptedBefore = (await harness.connections()).accepted;

    const reconnects: { afterSequence: bigint; lastYielded: bigint; error: unknown }[] = [];
    const snapshots: Job[] = [];
    const events: JobEvent[] = [];
    let cut = 0;
    for await (const event of watcher.watchJob(job.id, {
      onSnapshot: (s) => snapshots.push(s),
      onReconnect: ({ afterSequence, error }) =>
        reconnects.push({ afterSequence, lastYielded: events.at(-1)?.sequence ?? 0n, error }),
    })) {
      events.push(event);
      if (events.length === 1) {
        assert.ok(!(event.job && isTerminal(event.job.state)), "the job is still running");
        cut = await harness.cut();
      }
    }
    assert.ok(cut >= 1, "the cut closed the watch's connection");
    assert.equal(reconnects.length, 1, "exactly one resume after one cut");
    const broken = reconnects[0].error;
    assert.ok(
      !(broken instanceof FineTuneError && broken.code === Code.Unauthenticated),
      `the stream broke with the cut, not on the token: ${String(broken)}`,
    );
    assert.equal(reconnects[0].afterSequence, reconnects[0].lastYielded, "resumed after the last event seen");
    assert.deepEqual(
      requested,
      [
        { afterSequence: 0n, authorization: `Bearer ${harness.token}` },
        { afterSequence: reconnects[0].lastYielded, authorization: `Bearer ${harness.token}` },
      ],
      "WatchJob from 0, then from the last event, each with the token",
    );
    // Each stream the server accepted (it checks the token on every call) starts with a snapshot.
    assert.equal(snapshots.length, 2, "the server served the resumed stream");

    const sequences = events.map((e) => e.sequence);
    sequences.forEach((s, i) => assert.equal(s, BigInt(i + 1), `event ${i} has sequence ${s}`));
    assert.ok(events.length > 20, `a training job has many events, got ${events.length}`);
    assert.ok(events.some((e) => e.kind === JobEventKind.METRICS));
    const last = events.at(-1)!;
    assert.equal(last.kind, JobEventKind.STATE_CHANGED);
    assert.equal(last.job?.state, JobState.SUCCEEDED);
    assert.match(last.job?.fineTunedModel ?? "", /^ft:/);
    assert.equal(last.job?.lastSequence, last.sequence);
    assert.ok(
      (await harness.connections()).accepted >= acceptedBefore + 2,
      "the resume opened a new (TLS) connection",
    );
  });

  test("no token is UNAUTHENTICATED, a typed error", async () => {
    const anonymous = connect({ tls: { caFile: harness.caFile } });
    const err = await failure(anonymous.validateDataset(harness.sampleDataset), "a call without a token");
    assert.equal(err.code, Code.Unauthenticated);
    assert.equal(err.codeName, "UNAUTHENTICATED");
    assert.match(err.rawMessage, /ValidateDataset needs a token/);
    assert.equal(err.reason, "TOKEN_MISSING");
    assert.equal(err.metadata.role, "read");
    assert.match(err.message, /^UNAUTHENTICATED \(TOKEN_MISSING\): /);
  });

  test("a watch without a token fails at once, without reconnecting", async () => {
    const anonymous = connect({ tls: { caFile: harness.caFile } });
    const reconnects: number[] = [];
    const err = await failure(
      (async () => {
        for await (const _ of anonymous.watchJob("job-any", { onReconnect: ({ attempt }) => reconnects.push(attempt) })) {
          assert.fail("no event without a token");
        }
      })(),
      "a watch without a token",
    );
    assert.equal(err.code, Code.Unauthenticated);
    assert.deepEqual(reconnects, [], "UNAUTHENTICATED is not a broken connection");
  });

  test("a wrong token is UNAUTHENTICATED", async () => {
    const wrong = connect({ tls: { caFile: harness.caFile }, token: "ft_not-a-token-of-this-server" });
    const err = await failure(wrong.getJob("job-any"), "a call with a wrong token");
    assert.equal(err.code, Code.Unauthenticated);
    assert.match(err.rawMessage, /not valid/);
    assert.ok(!err.rawMessage.includes("ft_not-a-token"), "the token is not echoed");
  });

  test("the read token validates but may not train: PERMISSION_DENIED naming the role", async () => {
    const seen: { method: string; authorization: string | null }[] = [];
    const reader = connect({
      tls: { caFile: harness.caFile },
      token: harness.readToken,
      interceptors: [recordAuthorization(seen)],
    });
    const report = await reader.validateDataset(harness.sampleDataset);
    assert.equal(report.errorCount, 0n);
    await reader.listJobsPage({ pageSize: 10 }); // another read call

    const err = await failure(reader.startTraining({ training: harness.sampleDataset }), "StartTraining with the read token");
    assert.equal(err.code, Code.PermissionDenied);
    assert.equal(err.codeName, "PERMISSION_DENIED");
    assert.match(err.rawMessage, /lacks the train role that StartTraining needs/);
    assert.ok(!err.rawMessage.includes(harness.readToken), "the token is not echoed");
    assert.deepEqual(
      seen.map((s) => s.method),
      ["ValidateDataset", "ListJobs", "StartTraining"],
      "PERMISSION_DENIED is not retried",
    );
    assert.ok(seen.every((s) => s.authorization === `Bearer ${harness.readToken}`));

    const completeErr = await failure(
      reader.complete({ tier: "fast", messages: [{ role: ChatRole.USER, content: "Hi" }] }),
      "Complete with the read token",
    );
    assert.equal(completeErr.code, Code.PermissionDenied);
    assert.match(completeErr.rawMessage, /lacks the complete role that Complete needs/);
  });

  test("plaintext to the TLS server fails", async () => {
    const plain = connect({ token: harness.token });
    const started = Date.now();
    const err = await failure(
      plain.validateDataset(harness.sampleDataset, {}, { timeoutMs: 10_000 }),
      "a plaintext call to the TLS server",
    );
    // The server closes the connection on the plaintext HTTP/2 preface: connect-node reports
    // a connection closed under a call as CANCELED (see README), a refused one as UNAVAILABLE.
    assert.ok([Code.Canceled, Code.Unavailable].includes(err.code), `a transport failure: ${err.message}`);
    assert.equal(err.reason, "", "no answer from the service");
    assert.ok(Date.now() - started < 5_000, "it fails at once, it does not hang");
  });

  test("a TLS client that does not trust the run's CA is refused", async () => {
    // Node's built-in roots do not vouch for the harness's CA.
    const untrusting = connect({ tls: true, token: harness.token });
    const err = await failure(untrusting.validateDataset(harness.sampleDataset), "TLS without the CA");
    assert.match(err.message, /self[- ]signed|certificate|issuer/i);
  });

  test("a certificate for another name is refused", async () => {
    const misnamed = connect({ tls: { caFile: harness.caFile, serverName: "finetune.example" }, token: harness.token });
    const err = await failure(misnamed.validateDataset(harness.sampleDataset), "TLS with the wrong server name");
    assert.match(err.message, /altnames|hostname|finetune\.example/i);
  });
});
