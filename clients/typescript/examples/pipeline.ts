// The fine-tuning pipeline with the SDK: validate a dataset, train on it, watch the job, then
// test the trained model with a completion.
//
//   npm run build && npm run build:test
//   FINETUNE_ADDR=127.0.0.1:50051 node dist-test/examples/pipeline.js ../../examples/training-data.jsonl
//
// FINETUNE_TOKEN, when set, is sent as a bearer token. Exit status: 0 when the model answered,
// 1 when the dataset has errors or the job did not succeed, 2 on a service error.

import {
  ChatRole,
  FineTuneClient,
  FineTuneError,
  JobEventKind,
  JobState,
  Severity,
} from "@fileengine/finetune";

const address = process.env.FINETUNE_ADDR ?? "127.0.0.1:50051";
const dataset = process.argv[2] ?? "training-data.jsonl";
const prompt = process.argv[3] ?? "Build me a landing page with dark theme";

async function main(): Promise<number> {
  const client = new FineTuneClient({ address, token: process.env.FINETUNE_TOKEN });

  // 1. Validate: every problem, the token count and the cost, before anything is uploaded.
  const report = await client.validateDataset(dataset);
  console.log(
    `${dataset}: ${report.training?.examples} examples, ${report.training?.tokens?.total} tokens, ` +
      `${report.epochs} epochs, estimated $${report.estimatedCostUsd.toFixed(2)}`,
  );
  for (const p of report.problems) {
    const severity = p.severity === Severity.ERROR ? "error" : "warning";
    console.log(`  line ${p.line}: ${severity}[${p.code}] ${p.path ? `${p.path}: ` : ""}${p.message}`);
  }
  if (report.errorCount > 0n) {
    console.log(`${report.errorCount} errors: fix them before training`);
    return 1;
  }

  // 2. Train. The request id makes a retried request return the same job, not a second one.
  const { job } = await client.startTraining({ training: dataset, suffix: "file-engine" });
  console.log(`started ${job.id} (request id ${job.requestId})`);

  // 3. Watch until the job ends; a dropped stream is resumed where it broke.
  let final = job;
  for await (const event of client.watchJob(final.id, {
    onReconnect: ({ attempt, afterSequence }) =>
      console.log(`  (stream lost; resuming after event ${afterSequence}, attempt ${attempt})`),
  })) {
    if (event.kind === JobEventKind.STATE_CHANGED && event.job) {
      final = event.job;
      console.log(`  #${event.sequence} state ${JobState[final.state].toLowerCase()}`);
    } else if (event.kind === JobEventKind.METRICS && event.metrics) {
      const m = event.metrics;
      if (m.step % 10n === 0n || m.step === m.totalSteps) {
        console.log(`  #${event.sequence} step ${m.step}/${m.totalSteps} loss ${m.trainLoss?.toFixed(3)}`);
      }
    }
  }
  if (final.state !== JobState.SUCCEEDED) {
    console.log(`job ${final.id} ended ${JobState[final.state].toLowerCase()}: ${final.error?.message ?? ""}`);
    return 1;
  }
  console.log(
    `succeeded: ${final.fineTunedModel} (${final.trainedTokens} trained tokens, ` +
      `$${final.actualCostUsd.toFixed(2)}; estimate ${final.estimatedTokens} tokens, ` +
      `$${final.estimatedCostUsd.toFixed(2)})`,
  );

  // 4. Test the trained model. To serve it as the `fast` tier instead:
  //    await client.promoteModel("fast", { jobId: final.id });
  const completion = await client.complete({
    model: final.fineTunedModel,
    messages: [{ role: ChatRole.USER, content: prompt }],
  });
  console.log(
    `${completion.model} answered ${completion.usage?.completionTokens} tokens in ` +
      `${completion.latencyMs.toFixed(0)} ms ($${completion.costUsd.toFixed(4)}):`,
  );
  console.log(completion.text.slice(0, 300));
  return 0;
}

main().then(
  (status) => process.exit(status),
  (err: unknown) => {
    if (err instanceof FineTuneError) {
      console.error(`error: ${err.message}`);
      for (const v of err.fieldViolations) console.error(`  ${v.field}: ${v.description}`);
      for (const v of err.preconditionViolations) console.error(`  ${v.subject}: ${v.description}`);
      process.exit(2);
    }
    throw err;
  },
);
