// A consumer's CommonJS module: `import` compiles to `require`, resolved through the package's
// "require" condition (dist/cjs and its .d.ts).
import { FineTuneClient, FineTuneError, JobState, codeName } from "@fileengine/finetune";
import { JobEventKind } from "@fileengine/finetune/gen/fileengine/finetune/v1/job_pb.js";

const client = new FineTuneClient({ address: "127.0.0.1:1" });
client.close();
console.log(
  `cjs ${JobState[JobState.SUCCEEDED]} ${JobEventKind[JobEventKind.METRICS]} ${codeName(9)} ${typeof FineTuneError}`,
);
