// The package as a consumer gets it, in a fresh project outside clients/: `npm pack` (whose
// prepare script builds dist/), then the README's install steps, then `tsc --strict` with
// module NodeNext over the README's pipeline example (taken from README.md, so the README
// cannot rot), two small modules that import the package as ESM (generated code by `.js`
// subpath) and as CommonJS, and one that types the 0.2.0 API's shapes. The example then runs
// against the real server.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { startHarness, type Harness } from "./harness.js";

const packageRoot = fileURLToPath(new URL("../../", import.meta.url));
const consumerSources = join(packageRoot, "test/consumer");
const run = promisify(execFile);

// The outer `npm test` exports npm_* variables (npm_config_local_prefix among them) that
// would point a nested npm at this package instead of the consumer's project.
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("npm_")));

async function npm(cwd: string, ...args: string[]): Promise<string> {
  const { stdout } = await run("npm", [...args, "--no-audit", "--no-fund", "--prefer-offline"], {
    cwd,
    env,
    maxBuffer: 16 << 20,
  });
  return stdout;
}

/** The TypeScript block that follows `<!-- consumer test: NAME -->` in README.md. */
async function readmeBlock(name: string): Promise<string> {
  const readme = await readFile(join(packageRoot, "README.md"), "utf8");
  const marker = `<!-- consumer test: ${name} -->`;
  const at = readme.indexOf(marker);
  assert.ok(at >= 0, `README.md has no ${marker}`);
  const block = /```ts\n([\s\S]*?)\n```/.exec(readme.slice(at));
  assert.ok(block, `a \`\`\`ts block follows ${marker}`);
  return `${block[1]}\n`;
}

/** A new ESM project in `dir` with the package (`spec`) installed, and TypeScript beside it. */
async function consumerProject(dir: string, spec: string[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  await npm(dir, "init", "-y");
  await npm(dir, "pkg", "set", "type=module");
  // One install for the package and the compiler: the same as two, in half the time.
  await npm(dir, "install", ...spec, "typescript@5.9.3", "@types/node@20.19.43");
  await writeFile(
    join(dir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        module: "NodeNext",
        moduleResolution: "NodeNext",
        target: "ES2022",
        types: ["node"],
        outDir: "out",
      },
    }),
  );
  for (const file of ["subpath.ts", "require.cts", "shapes.ts"]) {
    await copyFile(join(consumerSources, file), join(dir, file));
  }
}

async function tsc(dir: string): Promise<void> {
  await run(join(dir, "node_modules/.bin/tsc"), ["-p", "."], { cwd: dir }).catch((e: { stdout?: string }) => {
    assert.fail(`tsc --strict failed in the consumer project:\n${e.stdout ?? e}`);
  });
}

async function node(dir: string, script: string, args: string[] = [], extraEnv = {}): Promise<string> {
  const { stdout } = await run(process.execPath, [script, ...args], {
    cwd: dir,
    env: { ...env, ...extraEnv },
    timeout: 120_000,
  });
  return stdout;
}

describe("consumer project", () => {
  let harness: Harness;
  let dir: string;
  let version: string;

  before(async () => {
    harness = await startHarness();
    dir = await mkdtemp(join(tmpdir(), "finetune-consumer-"));
    version = JSON.parse(await readFile(join(packageRoot, "package.json"), "utf8")).version;
  });

  after(async () => {
    await harness?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test("installs the packed tarball, compiles strict, runs the README's pipeline", async () => {
    await npm(packageRoot, "pack", "--pack-destination", dir);
    const tarball = join(dir, `fileengine-finetune-${version}.tgz`);
    const app = join(dir, "app");
    await consumerProject(app, [tarball]);
    await writeFile(join(app, "pipeline.ts"), await readmeBlock("pipeline.ts"));
    await tsc(app);

    const pipeline = await node(app, "out/pipeline.js", [harness.sampleDataset], {
      FINETUNE_ADDR: harness.address,
    });
    assert.match(pipeline, /^0 errors, 13 examples, estimated \$3\.10$/m);
    assert.match(pipeline, /^started job-\S+ \(request id [0-9a-f-]{36}\)$/m);
    assert.match(pipeline, /^job-\S+ succeeded: ft:gpt-4o-2024-08-06:\S*file-engine\S*$/m);
    assert.match(pipeline, /^answer: \S/m);

    assert.equal(await node(app, "out/subpath.js"), "esm SUCCEEDED google.rpc.ErrorInfo FAILED_PRECONDITION function\n");
    assert.equal(await node(app, "out/require.cjs"), "cjs SUCCEEDED METRICS FAILED_PRECONDITION function\n");
  });

  test("installs from the package's folder (npm install --install-links PATH)", async () => {
    const app = join(dir, "from-path");
    await consumerProject(app, ["--install-links", packageRoot]);
    await tsc(app);
    assert.equal(await node(app, "out/subpath.js"), "esm SUCCEEDED google.rpc.ErrorInfo FAILED_PRECONDITION function\n");
    assert.equal(await node(app, "out/require.cjs"), "cjs SUCCEEDED METRICS FAILED_PRECONDITION function\n");
  });
});
