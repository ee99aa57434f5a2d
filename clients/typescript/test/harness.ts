// Starts the SDK test harness (the real FineTune server on the emulator, behind a TCP proxy
// the tests can cut; see clients/harness/main.rs) and stops it again. With `secure: true`
// the server requires bearer tokens and speaks TLS (through the same proxy). Its control
// endpoint also injects the emulator's faults and lists the jobs the emulated OpenAI holds.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export interface Harness {
  /** The proxy in front of the server (`127.0.0.1:P`): what the SDK connects to. */
  address: string;
  /** The server itself, without the proxy. */
  directAddress: string;
  /** Whether the server speaks TLS and requires tokens (the harness ran with --secure). */
  tls: boolean;
  /** The absolute path of examples/training-data.jsonl (13 valid examples). */
  sampleDataset: string;
  /** Closes every open proxied connection at once; resolves to how many there were. */
  cut(): Promise<number>;
  /** The proxy's open and accepted connection counts. */
  connections(): Promise<{ open: number; accepted: number }>;
  /**
   * Fails the next `times` (default 1) emulator requests to `route` (`METHOD /v1/path`) with
   * the fault `kind` (`malformed_json`, `lost_response`, `latency` with `ms`, `rate_limit`
   * with `retry_after_ms`, ...).
   */
  inject(
    route: string,
    kind: string,
    fields?: { times?: number; ms?: number; retry_after_ms?: number },
  ): Promise<void>;
  /** Removes every injected fault not yet used. */
  clearFaults(): Promise<void>;
  /**
   * Restarts the server: it drains and stops (open proxied connections are cut, new ones
   * refused), and starts again on the same address and data directory after `downMs`.
   * Resolves once the server is down.
   */
  restart(downMs: number): Promise<void>;
  /** Whether the server is up (false while a restart keeps it down). */
  up(): Promise<boolean>;
  /** The ids of the jobs the emulated OpenAI holds for `requestId`. */
  upstreamJobs(requestId: string): Promise<string[]>;
  /** Stops the harness (closing its stdin) and waits for it to exit. */
  stop(): Promise<void>;
}

/** A harness started with `secure: true`. */
export interface SecureHarness extends Harness {
  tls: true;
  /** The PEM file of the CA made for the run; the server certificate is for localhost and 127.0.0.1. */
  caFile: string;
  /** A token with every role (read, train, complete). */
  token: string;
  /** A token with the read role only. */
  readToken: string;
}

export interface HarnessOptions {
  /** Run the harness with --secure: bearer tokens required, TLS. */
  secure?: boolean;
}

/** The harness's JSON line. */
interface HarnessLine {
  address: string;
  direct_address: string;
  control: string;
  sample_dataset: string;
  tls: boolean;
  ca_file?: string;
  token?: string;
  read_token?: string;
}

// From dist-test/test/harness.js up to the repository root.
export const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));

export function harnessPath(): string {
  return process.env.FINETUNE_HARNESS || `${repoRoot}target/debug/examples/sdk_harness`;
}

export function startHarness(options: HarnessOptions & { secure: true }): Promise<SecureHarness>;
export function startHarness(options?: HarnessOptions): Promise<Harness>;
export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const path = harnessPath();
  if (!existsSync(path)) {
    throw new Error(
      `no test harness at ${path}: run \`cargo build --example sdk_harness\` in the repository root, or set FINETUNE_HARNESS`,
    );
  }
  // stdin stays an open pipe: the harness exits when it closes, also if this process dies.
  // Its log (warnings and errors only) goes to our stderr, without colours.
  const child = spawn(path, options.secure ? ["--secure"] : [], {
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  const line = await firstLine(child);
  const info = JSON.parse(line) as HarnessLine;
  const control = info.control;
  const harness: Harness = {
    address: info.address,
    directAddress: info.direct_address,
    tls: info.tls,
    sampleDataset: info.sample_dataset,
    async cut() {
      const res = await fetch(`${control}/cut`, { method: "POST" });
      return ((await res.json()) as { cut: number }).cut;
    },
    async connections() {
      const res = await fetch(`${control}/connections`);
      return (await res.json()) as { open: number; accepted: number };
    },
    async inject(route, kind, fields = {}) {
      const res = await fetch(`${control}/faults`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ route, kind, ...fields }),
      });
      if (!res.ok) {
        throw new Error(`injecting ${kind} on ${route}: HTTP ${res.status} ${await res.text()}`);
      }
    },
    async clearFaults() {
      await fetch(`${control}/faults`, { method: "DELETE" });
    },
    async restart(downMs) {
      const res = await fetch(`${control}/restart`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ down_ms: downMs }),
      });
      const body = (await res.json()) as { stopped?: boolean };
      if (!res.ok || body.stopped !== true) {
        throw new Error(`restarting the server: HTTP ${res.status} ${JSON.stringify(body)}`);
      }
    },
    async up() {
      const res = await fetch(`${control}/up`);
      return ((await res.json()) as { up: boolean }).up;
    },
    async upstreamJobs(requestId) {
      const res = await fetch(`${control}/upstream_jobs`);
      const body = (await res.json()) as { by_request: Record<string, string[]> };
      return body.by_request[requestId] ?? [];
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) {
        return;
      }
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.stdin?.end();
      await exited;
    },
  };
  if (info.tls !== Boolean(options.secure)) {
    await harness.stop();
    throw new Error(`asked for secure=${Boolean(options.secure)}, the harness says tls=${info.tls}: ${line}`);
  }
  if (!info.tls) {
    return harness;
  }
  if (!info.ca_file || !info.token || !info.read_token) {
    await harness.stop();
    throw new Error(`the secure harness's line lacks ca_file, token or read_token: ${line}`);
  }
  const secure: SecureHarness = {
    ...harness,
    tls: true,
    caFile: info.ca_file,
    token: info.token,
    readToken: info.read_token,
  };
  return secure;
}

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const onExit = (code: number | null) =>
      reject(new Error(`the test harness exited (status ${code}) before printing its addresses`));
    child.once("error", reject);
    child.once("exit", onExit);
    lines.once("line", (line) => {
      child.off("exit", onExit);
      resolve(line);
    });
  });
}

/**
 * Writes `bad.jsonl` into `dir` and returns its path: line 1 is a valid example, line 2 is not
 * JSON (problem `invalid_json`), and one example is too few to train on (`too_few_examples`).
 */
export async function writeBadDataset(dir: string): Promise<string> {
  const path = join(dir, "bad.jsonl");
  await writeFile(
    path,
    '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}\n' +
      "this line is not JSON\n",
  );
  return path;
}
