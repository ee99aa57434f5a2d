// Marks a directory of tsc's CommonJS output as CommonJS: the package is "type": "module",
// so without this package.json Node (and TypeScript) would read its .js and .d.ts as ESM.
import { writeFileSync } from "node:fs";
import { join } from "node:path";

writeFileSync(join(process.argv[2], "package.json"), `${JSON.stringify({ type: "commonjs" })}\n`);
