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
                outln!("{}", job_line(j));
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

/// One job of `finetune jobs`: id, state, creation time, then the cost and the model (the
/// fine-tuned one once there is one). A job that failed or was cancelled with no tokens
/// trained reported no cost and made no model: it shows `-` for both, and its error code.
fn job_line(j: &pb::Job) -> String {
    let head = format!(
        "{}  {:<16} {}",
        j.id,
        state_name(j.state),
        time(j.create_time.as_ref())
    );
    let ended = [pb::JobState::Failed, pb::JobState::Cancelled]
        .iter()
        .any(|s| *s as i32 == j.state);
    if ended && j.trained_tokens == 0 && j.fine_tuned_model.is_empty() {
        let code = j.error.as_ref().map_or("", |e| e.code.as_str());
        return format!("{head}  -  {}", if code.is_empty() { "-" } else { code });
    }
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
    format!("{head}  ${cost:.2}  {model}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: pb::JobState) -> pb::Job {
        pb::Job {
            id: "job-1".into(),
            state: state as i32,
            model: "gpt-4o-mini-2024-07-18".into(),
            estimated_cost_usd: 0.15,
            create_time: Some(prost_types::Timestamp {
                seconds: 1_795_659_345,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_job_that_never_trained_shows_no_cost_and_no_model_but_its_error() {
        let mut failed = job(pb::JobState::Failed);
        failed.error = Some(pb::JobError {
            code: "invalid_n_examples".into(),
            message: "Training file has 5 example(s), but must have at least 10 examples".into(),
            param: "training_file".into(),
        });
        assert_eq!(
            job_line(&failed),
            "job-1  failed           2026-11-26T02:15:45Z  -  invalid_n_examples"
        );
        assert_eq!(
            job_line(&job(pb::JobState::Cancelled)),
            "job-1  cancelled        2026-11-26T02:15:45Z  -  -"
        );
        assert_eq!(
            job_line(&job(pb::JobState::Running)),
            "job-1  running          2026-11-26T02:15:45Z  $0.15  gpt-4o-mini-2024-07-18"
        );
    }
}
