// A consumer's ESM module: the generated code by subpath, with `.js` as NodeNext wants it.
import { JobState } from "@fileengine/finetune/gen/fileengine/finetune/v1/job_pb.js";
import { ErrorInfoSchema } from "@fileengine/finetune/gen/google/rpc/error_details_pb.js";
import { FineTuneError, JobState as RootJobState, codeName } from "@fileengine/finetune";

const state: JobState = RootJobState.SUCCEEDED;
console.log(`esm ${JobState[state]} ${ErrorInfoSchema.typeName} ${codeName(9)} ${typeof FineTuneError}`);
