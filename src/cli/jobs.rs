//! `finetune jobs` and `finetune cancel JOB`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::client::{Connection, describe, time};
use super::watch::{job_json, state_name};
use crate::pb;

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// How many jobs to list, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job to cancel (this service's id or OpenAI's ftjob- id).
    pub job: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub(super) fn list(args: &JobsArgs) -> ExitCode {
    let result = super::client::runtime().and_then(|rt| {
        rt.block_on(async {
            let mut client = args.connection.connect().await?;
            let page = client
                .list_jobs(pb::ListJobsRequest {
                    page_size: args.limit,
                    ..Default::default()
                })
                .await
                .map_err(|s| describe(&s))?
                .into_inner();
            Ok::<_, String>(page.jobs)
        })
    });
    match result {
        Ok(jobs) if args.json => {
            outln!(
                "{}",
                json!({"jobs": jobs.iter().map(job_json).collect::<Vec<_>>()})
            );
            ExitCode::SUCCESS
        }
        Ok(jobs) => {
            if jobs.is_empty() {
                outln!("no jobs yet: start one with `finetune train`");
            }
            for j in &jobs {
                let cost = if j.actual_cost_usd > 0.0 {
                    j.actual_cost_usd
                } else {
                    j.estimated_cost_usd
                };
                let model = if j.fine_tuned_model.is_empty() {
                    &j.model
                } else {
                    &j.fine_tuned_model
                };
                outln!(
                    "{}  {:<16} {}  ${cost:.2}  {model}",
                    j.id,
                    state_name(j.state),
                    time(j.create_time.as_ref())
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("finetune jobs: {e}");
            ExitCode::from(2)
        }
    }
}

pub(super) fn cancel(args: &CancelArgs) -> ExitCode {
    let result = super::client::runtime().and_then(|rt| {
        rt.block_on(async {
            let mut client = args.connection.connect().await?;
            let response = client
                .cancel_job(pb::CancelJobRequest {
                    job_id: args.job.clone(),
                })
                .await
                .map_err(|s| describe(&s))?
                .into_inner();
            response
                .job
                .ok_or_else(|| "the server returned no job".to_owned())
        })
    });
    match result {
        Ok(job) if args.json => {
            outln!("{}", json!({"job": job_json(&job)}));
            ExitCode::SUCCESS
        }
        Ok(job) => {
            outln!("job {} is {}", job.id, state_name(job.state));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("finetune cancel: {e}");
            ExitCode::from(2)
        }
    }
}
