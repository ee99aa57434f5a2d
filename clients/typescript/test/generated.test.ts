// The committed generated code is what gen.sh makes from the protos today: regenerate into a
// temporary directory and compare byte for byte.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { test } from "node:test";

const packageRoot = fileURLToPath(new URL("../../", import.meta.url));

async function files(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) {
      const path = join(entry.parentPath ?? entry.path, entry.name);
      out.set(relative(dir, path), await readFile(path));
    }
  }
  return out;
}

test("src/gen matches a fresh ./gen.sh", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "finetune-gen-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await promisify(execFile)(join(packageRoot, "gen.sh"), [join(dir, "gen")]);

  const committed = await files(join(packageRoot, "src/gen"));
  const fresh = await files(join(dir, "gen"));
  assert.deepEqual([...committed.keys()].sort(), [...fresh.keys()].sort(), "the same files");
  for (const [name, bytes] of fresh) {
    assert.ok(bytes.equals(committed.get(name)!), `src/gen/${name} is stale: run ./gen.sh`);
  }
});
