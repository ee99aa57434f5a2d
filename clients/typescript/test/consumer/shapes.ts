// Compiled strict in the consumer project, never run: the 0.2.0 shapes as a consumer's
// compiler sees them through the packed package's types (a wrong type fails `tsc`).
import {
  FineTuneClient,
  FineTuneError,
  JobState,
  type Completion,
  type Job,
  type JobEvent,
  type ListJobsResponse,
  type PromoteModelResponse,
} from "@fileengine/finetune";

export async function shapes(client: FineTuneClient, err: FineTuneError): Promise<void> {
  const jobs: Job[] = [];
  for await (const job of client.listJobs({ state: JobState.SUCCEEDED, pageSize: 50 })) jobs.push(job);
  const page: ListJobsResponse = await client.listJobsPage({ pageSize: 10 });
  const deprecatedPage: ListJobsResponse = await client.listJobs(); // 0.1.0 code still compiles

  const watch = client.watchJob(page.jobs[0].id, { afterSequence: 0n });
  for await (const event of watch) {
    const e: JobEvent = event;
    if (e.sequence > 10n) watch.stop();
  }
  const latest: Job | undefined = watch.job;
  const counts: [number, bigint] = [watch.resumes, watch.lastSequence];

  const stream = client.streamComplete({ tier: "fast", messages: [] });
  let text = "";
  for await (const delta of stream) text += delta;
  const completion: Completion | undefined = stream.completion;

  const promoted: PromoteModelResponse = await client.promoteModel("fast", { jobId: "job-1" });
  const byName: string = (await client.promoteModel("fast", { model: "gpt-4o-mini" })).previousModel;

  const details: [string, string, number | undefined, string] = [
    err.codeName,
    err.reason,
    err.retryDelayMs,
    err.requestId,
  ];
  console.log(jobs, deprecatedPage, latest, counts, text, completion, promoted, byName, details);
}
