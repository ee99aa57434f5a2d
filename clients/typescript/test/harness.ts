// Starts the SDK test harness (the real FineTune server in emulator mode behind a TCP proxy
// the tests can cut; see clients/harness/main.rs) and stops it again.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export interface Harness {
  /** The proxy in front of the server: what the SDK connects to. */
  address: string;
  /** The absolute path of examples/training-data.jsonl (13 valid examples). */
  sampleDataset: string;
  /** Closes every open proxied connection at once; resolves to how many there were. */
  cut(): Promise<number>;
  /** The proxy's open and accepted connection counts. */
  connections(): Promise<{ open: number; accepted: number }>;
  /** Stops the harness (closing its stdin) and waits for it to exit. */
  stop(): Promise<void>;
}

// From dist-test/test/harness.js up to the repository root.
const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));

export function harnessPath(): string {
  return process.env.FINETUNE_HARNESS || `${repoRoot}target/debug/examples/sdk_harness`;
}

export async function startHarness(): Promise<Harness> {
  const path = harnessPath();
  if (!existsSync(path)) {
    throw new Error(
      `no test harness at ${path}: run \`cargo build --example sdk_harness\` in the repository root, or set FINETUNE_HARNESS`,
    );
  }
  // stdin stays an open pipe: the harness exits when it closes, also if this process dies.
  // Its log (warnings and errors only) goes to our stderr, without colours.
  const child = spawn(path, [], {
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  const line = await firstLine(child);
  const info = JSON.parse(line) as { address: string; control: string; sample_dataset: string };
  const control = info.control;
  return {
    address: info.address,
    sampleDataset: info.sample_dataset,
    async cut() {
      const res = await fetch(`${control}/cut`, { method: "POST" });
      return ((await res.json()) as { cut: number }).cut;
    },
    async connections() {
      const res = await fetch(`${control}/connections`);
      return (await res.json()) as { open: number; accepted: number };
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
