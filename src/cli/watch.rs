//! `finetune watch [JOB]`: follow a job live; reconnect and resume by itself.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tonic::Code;

use super::client::{Connection, describe, time};
use crate::dataset::render::thousands;
use crate::pb;
use crate::pb::watch_job_response::Item;

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The job (this service's id or OpenAI's ftjob- id); default: the latest job.
    pub job: Option<String>,
    /// Print one JSON object per line instead of a progress display.
    #[arg(long)]
    pub json: bool,
    /// Resume after this sequence number instead of replaying the job's history.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    #[command(flatten)]
    pub connection: Connection,
}

pub(super) fn run(args: &WatchArgs) -> ExitCode {
    let runtime = match super::client::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("finetune watch: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let job = match &args.job {
            Some(job) => job.clone(),
            None => match latest_job(&args.connection).await {
                Ok(job) => job,
                Err(e) => {
                    eprintln!("finetune watch: {e}");
                    return ExitCode::from(2);
                }
            },
        };
        follow(&args.connection, &job, args.after, args.json).await
    })
}

async fn latest_job(connection: &Connection) -> Result<String, String> {
    let mut client = connection.connect().await?;
    let page = client
        .list_jobs(pb::ListJobsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    page.jobs
        .first()
        .map(|j| j.id.clone())
        .ok_or_else(|| "no jobs yet: start one with `finetune train`".to_owned())
}

/// How the watch is shown.
enum Display {
    Json,
    Bar(ProgressBar),
    Lines,
}

impl Display {
    fn new(json: bool) -> Display {
        if json {
            Display::Json
        } else if std::io::stdout().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] step {pos}/{len} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            Display::Bar(bar)
        } else {
            Display::Lines
        }
    }

    fn line(&self, text: &str) {
        match self {
            Display::Bar(bar) => bar.println(text),
            _ => outln!("{text}"),
        }
    }

    /// A note about the watch itself (not the job): stderr when stdout is JSON.
    fn note(&self, text: &str) {
        match self {
            Display::Json => eprintln!("{text}"),
            _ => self.line(text),
        }
    }

    fn show(&self, item: &Item) {
        match (self, item) {
            (Display::Json, item) => outln!("{}", item_json(item)),
            (_, Item::Snapshot(job)) => self.line(&format!(
                "job {} ({}) {} on {}, created {}",
                job.id,
                job.upstream_id,
                state_name(job.state),
                job.model,
                time(job.create_time.as_ref())
            )),
            (Display::Bar(bar), Item::Event(e)) if e.metrics.is_some() => {
                let m = e.metrics.as_ref().expect("checked");
                bar.set_length(m.total_steps.max(m.step));
                bar.set_position(m.step);
                bar.set_message(format!(
                    "loss {}",
                    m.train_loss.map_or("-".to_owned(), |l| format!("{l:.4}"))
                ));
            }
            (Display::Lines, Item::Event(e)) if e.metrics.is_some() => {
                let m = e.metrics.as_ref().expect("checked");
                if m.step == 1 || m.step % 10 == 0 || m.step == m.total_steps {
                    self.line(&format!(
                        "#{} step {}/{}: {}",
                        e.sequence, m.step, m.total_steps, e.message
                    ));
                }
            }
            (_, Item::Event(e)) => {
                let eta = e
                    .job
                    .as_ref()
                    .and_then(|j| j.estimated_finish_time.as_ref())
                    .map(|t| format!(" (ETA {})", time(Some(t))))
                    .unwrap_or_default();
                self.line(&format!("#{} {} {}{eta}", e.sequence, e.level, e.message));
            }
            (_, Item::Heartbeat(_)) => {}
        }
    }

    fn finish(&self) {
        if let Display::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Follows the job to its end, resuming after lost streams. Exit 0 when it succeeded.
pub(super) async fn follow(connection: &Connection, job: &str, after: u64, json: bool) -> ExitCode {
    let display = Display::new(json);
    let mut last = after;
    let mut failures = 0u32;
    let mut snapshot_shown = false;
    loop {
        let outcome = watch_once(connection, job, &mut last, &display, &mut snapshot_shown).await;
        match outcome {
            Ok(Some(done)) => {
                display.finish();
                return report_end(&done, json);
            }
            Ok(None) => failures = 0,
            Err(Fatal(message)) => {
                display.finish();
                eprintln!("finetune watch: {message}");
                return ExitCode::from(2);
            }
            Err(Retry(message)) => {
                failures += 1;
                let wait = Duration::from_millis((250u64 << failures.min(5)).min(5_000));
                display.note(&format!(
                    "connection lost ({message}); resuming after #{last} in {:.1}s",
                    wait.as_secs_f64()
                ));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

enum WatchError {
    Retry(String),
    Fatal(String),
}
use WatchError::{Fatal, Retry};

/// One stream. Returns the final job when the job finished.
async fn watch_once(
    connection: &Connection,
    job: &str,
    last: &mut u64,
    display: &Display,
    snapshot_shown: &mut bool,
) -> Result<Option<pb::Job>, WatchError> {
    let mut client = connection.connect().await.map_err(Retry)?;
    let mut stream = match client
        .watch_job(pb::WatchJobRequest {
            job_id: job.to_owned(),
            after_sequence: *last,
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if retryable(s.code()) => return Err(Retry(describe(&s))),
        Err(s) => return Err(Fatal(describe(&s))),
    };
    let mut snapshot: Option<pb::Job> = None;
    loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                let Some(item) = msg.item else { continue };
                match &item {
                    Item::Snapshot(j) => {
                        snapshot = Some(j.clone());
                        if *snapshot_shown {
                            continue;
                        }
                        *snapshot_shown = true;
                    }
                    Item::Event(e) => *last = e.sequence,
                    Item::Heartbeat(_) => {}
                }
                display.show(&item);
                if let Item::Event(e) = &item {
                    if let Some(j) = e.job.as_ref().filter(|j| terminal(j.state)) {
                        return Ok(Some(j.clone()));
                    }
                }
            }
            // The stream ended: either the job was already over, or the server closed it.
            Ok(None) => {
                return match snapshot {
                    Some(j) if terminal(j.state) && *last >= j.last_sequence => Ok(Some(j)),
                    _ => Ok(None),
                };
            }
            Err(s) if retryable(s.code()) => return Err(Retry(describe(&s))),
            Err(s) => return Err(Fatal(describe(&s))),
        }
    }
}

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
    )
}

fn terminal(state: i32) -> bool {
    [
        pb::JobState::Succeeded,
        pb::JobState::Failed,
        pb::JobState::Cancelled,
    ]
    .iter()
    .any(|s| *s as i32 == state)
}

pub(super) fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::ValidatingFiles) => "validating_files",
        Ok(pb::JobState::Queued) => "queued",
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Succeeded) => "succeeded",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Cancelled) => "cancelled",
        Ok(pb::JobState::Paused) => "paused",
        _ => "unknown",
    }
}

fn report_end(job: &pb::Job, json: bool) -> ExitCode {
    let succeeded = job.state == pb::JobState::Succeeded as i32;
    if !json {
        if succeeded {
            outln!(
                "succeeded: {} ({})",
                job.fine_tuned_model,
                actual_against_estimate(job)
            );
        } else {
            let reason = job
                .error
                .as_ref()
                .map(|e| format!(": {} ({})", e.message, e.code))
                .unwrap_or_default();
            outln!("{}{reason}", state_name(job.state));
        }
    }
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// What OpenAI reported beside what validation estimated, and how far apart they are. OpenAI
/// counts by its own unpublished rule, so the two are compared, never expected to match.
pub(super) fn actual_against_estimate(job: &pb::Job) -> String {
    let trained = format!(
        "trained {} tokens, ${:.2}",
        thousands(job.trained_tokens),
        job.actual_cost_usd
    );
    if job.estimated_tokens == 0 {
        return format!("{trained}; no estimate: the job was not started through this service");
    }
    let change = (job.trained_tokens as f64 - job.estimated_tokens as f64)
        / job.estimated_tokens as f64
        * 100.0;
    format!(
        "{trained}; estimate {} tokens, ${:.2}: {change:+.1}%",
        thousands(job.estimated_tokens),
        job.estimated_cost_usd
    )
}

pub(super) fn job_json(j: &pb::Job) -> serde_json::Value {
    json!({
        "id": j.id,
        "upstream_id": j.upstream_id,
        "request_id": j.request_id,
        "state": state_name(j.state),
        "upstream_status": j.upstream_status,
        "model": j.model,
        "fine_tuned_model": j.fine_tuned_model,
        "trained_tokens": j.trained_tokens,
        "estimated_tokens": j.estimated_tokens,
        "estimated_cost_usd": j.estimated_cost_usd,
        "actual_cost_usd": j.actual_cost_usd,
        "error": j.error.as_ref().map(|e| json!({"code": e.code, "message": e.message, "param": e.param})),
        "created": time(j.create_time.as_ref()),
        "finished": j.finish_time.as_ref().map(|t| time(Some(t))),
        "last_sequence": j.last_sequence,
        "accepted_problems": j.accepted_problems.iter().map(|a| {
            let file = if a.dataset == pb::DatasetRole::Validation as i32 { "validation" } else { "training" };
            format!("{}:{file}:{}", a.code, a.line)
        }).collect::<Vec<_>>(),
    })
}

fn item_json(item: &Item) -> serde_json::Value {
    match item {
        Item::Snapshot(j) => json!({"snapshot": job_json(j)}),
        Item::Event(e) => json!({"event": {
            "sequence": e.sequence,
            "kind": pb::JobEventKind::try_from(e.kind).map_or("unspecified", |k| k.as_str_name()),
            "level": e.level,
            "message": e.message,
            "time": time(e.create_time.as_ref()),
            "metrics": e.metrics.as_ref().map(|m| json!({
                "step": m.step, "total_steps": m.total_steps, "train_loss": m.train_loss,
                "train_mean_token_accuracy": m.train_mean_token_accuracy, "valid_loss": m.valid_loss,
            })),
            "checkpoint": e.checkpoint.as_ref().map(|c| json!({"id": c.id, "step": c.step, "model": c.model})),
            "job": e.job.as_ref().map(job_json),
        }}),
        Item::Heartbeat(h) => json!({"heartbeat": {"last_sequence": h.last_sequence}}),
    }
}
