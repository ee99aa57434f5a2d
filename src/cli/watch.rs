//! `finetune watch [JOB]`: follow a job live; reconnect and resume by itself.

mod render;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tonic::Code;

use super::client::{Connection, describe, time};
use super::words::user_name;
use crate::pb;
use crate::pb::watch_job_response::Item;
use finetune_core::dataset::render::thousands;
use render::{Progress, Render};

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

/// How the watch is shown: JSON lines, or the lines of [`render`] (with a progress bar
/// on a terminal).
enum Display {
    Json,
    Text {
        render: Render,
        bar: Option<ProgressBar>,
        out: Box<dyn Write>,
    },
}

impl Display {
    fn new(json: bool) -> Display {
        if json {
            return Display::Json;
        }
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Display::text(bar, Box::new(std::io::stdout()))
    }

    /// Lines to `out`, or above `bar` when there is one.
    fn text(bar: Option<ProgressBar>, out: Box<dyn Write>) -> Display {
        Display::Text {
            render: Render::default(),
            bar,
            out,
        }
    }

    fn line(&mut self, text: &str) {
        match self {
            Display::Text { bar: Some(bar), .. } => bar.println(text),
            Display::Text { out, .. } => {
                if let Err(e) = writeln!(out, "{text}") {
                    // `finetune watch | head`: the reader left, so the watch ends quietly.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        std::process::exit(0);
                    }
                }
            }
            Display::Json => outln!("{text}"),
        }
    }

    /// A note about the watch itself (not the job): stderr when stdout is JSON.
    fn note(&mut self, text: &str) {
        match self {
            Display::Json => eprintln!("{text}"),
            _ => self.line(text),
        }
    }

    fn show(&mut self, item: &Item) {
        let Display::Text { render, bar, .. } = self else {
            outln!("{}", item_json(item));
            return;
        };
        let shown = render.item(item);
        if let (Some(bar), Some(progress)) = (bar.as_ref(), shown.progress) {
            draw(bar, progress);
        }
        if let Some(text) = shown.line {
            self.line(&text);
        }
    }

    /// Ends the display; `end` is the finished job, whose last line closes a text watch.
    fn finish(&mut self, end: Option<&pb::Job>) {
        if let (Display::Text { .. }, Some(job)) = (&*self, end) {
            self.line(&render::end_line(job));
        }
        if let Display::Text { bar: Some(bar), .. } = self {
            bar.finish_and_clear();
        }
    }
}

/// A spinner with the state while there is no step total, a bar once there is.
fn draw(bar: &ProgressBar, progress: Progress) {
    match progress {
        Progress::Waiting(state) => {
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("static template"),
            );
            bar.set_message(state);
        }
        Progress::Steps {
            step,
            total,
            status,
        } => {
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] step {pos}/{len} {wide_msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_length(total);
            bar.set_position(step);
            bar.set_message(status);
        }
        Progress::Done => {
            bar.set_style(ProgressStyle::with_template("").expect("static template"));
        }
    }
}

/// Follows the job to its end, resuming after lost streams. Exit 0 when it succeeded.
pub(super) async fn follow(connection: &Connection, job: &str, after: u64, json: bool) -> ExitCode {
    let mut display = Display::new(json);
    let mut last = after;
    let mut failures = 0u32;
    let mut snapshot_shown = false;
    loop {
        let outcome = watch_once(
            connection,
            job,
            &mut last,
            &mut display,
            &mut snapshot_shown,
        )
        .await;
        match outcome {
            Ok(Some(done)) => {
                display.finish(Some(&done));
                return exit_code(&done);
            }
            Ok(None) => failures = 0,
            Err(Fatal(message)) => {
                display.finish(None);
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
    display: &mut Display,
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

pub(super) fn terminal(state: i32) -> bool {
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

fn exit_code(job: &pb::Job) -> ExitCode {
    if job.state == pb::JobState::Succeeded as i32 {
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
            "kind": user_name::<pb::JobEventKind>(e.kind),
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

#[cfg(test)]
mod tests {
    //! Snapshots of what `finetune watch` prints, plain and on a terminal, for a job as
    //! OpenAI ran it: the recorded job `ftjob-JlHszAFOnjdLuFiGT3YBkl08` (100 steps, its three
    //! checkpoints, its ids, models and times) from reference/recorded, with OpenAI's own
    //! message texts (reference/openai-api.md) and the step times in between interpolated.

    use std::cell::RefCell;
    use std::rc::Rc;

    use indicatif::{InMemoryTerm, ProgressBar, ProgressDrawTarget};
    use serde_json::Value;

    use super::*;

    const JOB: &str = "ftjob-JlHszAFOnjdLuFiGT3YBkl08";

    fn recorded() -> Value {
        serde_json::from_str(include_str!(
            "../../reference/recorded/openai-dotnet/FineTuningClientTests/GetCheckpoints.json"
        ))
        .unwrap()
    }

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn job(state: pb::JobState) -> pb::Job {
        pb::Job {
            id: "job-5f1c0e7a".into(),
            upstream_id: JOB.into(),
            state: state as i32,
            model: "gpt-3.5-turbo-0125".into(),
            create_time: ts(1_755_206_255),
            estimated_tokens: 5_950,
            estimated_cost_usd: 5_950.0 * 8.0 / 1e6,
            ..Default::default()
        }
    }

    /// Builds the log as this service records it: sequence numbers, state changes.
    #[derive(Default)]
    struct Log(Vec<Item>);

    impl Log {
        fn event(&mut self, at: i64, level: &str, message: &str) -> &mut pb::JobEvent {
            let sequence = self.0.len() as u64 + 1;
            self.0.push(Item::Event(pb::JobEvent {
                job_id: "job-5f1c0e7a".into(),
                sequence,
                kind: pb::JobEventKind::Message as i32,
                create_time: ts(at),
                level: level.into(),
                message: message.into(),
                ..Default::default()
            }));
            match self.0.last_mut() {
                Some(Item::Event(e)) => e,
                _ => unreachable!(),
            }
        }

        fn state(&mut self, at: i64, job: pb::Job, message: &str) {
            let e = self.event(at, "info", message);
            e.kind = pb::JobEventKind::StateChanged as i32;
            e.job = Some(job);
        }
    }

    /// The recorded job from creation to success, as WatchJob streams it.
    fn succeeded_job() -> (pb::Job, Vec<Item>) {
        let recorded = recorded();
        let upstream = recorded["Entries"][0]["ResponseBody"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == JOB)
            .unwrap()
            .clone();
        let mut checkpoints = recorded["Entries"][1]["ResponseBody"]["data"]
            .as_array()
            .unwrap()
            .clone();
        checkpoints.reverse();
        let created = upstream["created_at"].as_i64().unwrap();
        let finished = upstream["finished_at"].as_i64().unwrap();
        let model = upstream["fine_tuned_model"].as_str().unwrap().to_owned();
        let training_file = upstream["training_file"].as_str().unwrap();
        // Steps land on the recorded checkpoints' times: 80 at +326 s, 90 at +344, 100 at +360.
        let step_time = |s: i64| match s {
            ..=80 => created + 186 + s * 140 / 80,
            81..=90 => created + 326 + (s - 80) * 18 / 10,
            _ => created + 344 + (s - 90) * 16 / 10,
        };

        let mut log = Log::default();
        log.event(
            created - 1,
            "info",
            "Accepted: 10 examples validated; uploading to OpenAI",
        );
        log.state(
            created,
            job(pb::JobState::ValidatingFiles),
            &format!("Created OpenAI fine-tuning job {JOB} (validating_files)"),
        );
        log.event(created, "info", &format!("Created fine-tuning job: {JOB}"));
        log.event(
            created,
            "info",
            &format!("Validating training file: {training_file}"),
        );
        log.event(
            created + 45,
            "info",
            "Files validated, moving job to queued state",
        );
        log.state(created + 46, job(pb::JobState::Queued), "Now queued");
        log.event(created + 180, "info", "Fine-tuning job started");
        let mut running = job(pb::JobState::Running);
        running.estimated_finish_time = ts(created + 380);
        log.state(created + 181, running, "Now running");
        for s in 1..=100_i64 {
            let loss = match checkpoints.iter().find(|c| c["step_number"] == s) {
                Some(c) => c["metrics"]["train_loss"].as_f64().unwrap(),
                None => 2.2562 * (-(s as f64) / 12.0).exp(),
            };
            let e = log.event(
                step_time(s),
                "info",
                &format!("Step {s}/100: training loss={loss:.2}"),
            );
            e.kind = pb::JobEventKind::Metrics as i32;
            e.upstream_id = format!("ftevent-step{s}");
            e.metrics = Some(pb::StepMetrics {
                step: s as u64,
                total_steps: 100,
                train_loss: Some(loss),
                train_mean_token_accuracy: Some(1.0 - loss.min(1.0) / 2.0),
                ..Default::default()
            });
            if let Some(c) = checkpoints.iter().find(|c| c["step_number"] == s) {
                let checkpoint_model = c["fine_tuned_model_checkpoint"].as_str().unwrap();
                let e = log.event(
                    c["created_at"].as_i64().unwrap(),
                    "info",
                    &format!("Checkpoint at step {s}: {checkpoint_model}"),
                );
                e.kind = pb::JobEventKind::Checkpoint as i32;
                e.checkpoint = Some(pb::Checkpoint {
                    id: c["id"].as_str().unwrap().into(),
                    step: s as u64,
                    model: checkpoint_model.into(),
                    metrics: None,
                    create_time: ts(c["created_at"].as_i64().unwrap()),
                });
            }
        }
        log.event(
            finished,
            "info",
            &format!("New fine-tuned model created: {model}"),
        );
        log.event(finished, "info", "The job has successfully completed");
        let mut done = job(pb::JobState::Succeeded);
        done.fine_tuned_model = model.clone();
        done.trained_tokens = upstream["trained_tokens"].as_u64().unwrap();
        done.actual_cost_usd = done.trained_tokens as f64 * 8.0 / 1e6;
        done.finish_time = ts(finished);
        log.state(finished, done.clone(), &format!("Succeeded: {model}"));

        let mut items = vec![Item::Snapshot(job(pb::JobState::ValidatingFiles))];
        items.extend(log.0);
        (done, items)
    }

    /// A job OpenAI refused at validation, with its recorded error (reference/openai-api.md).
    fn failed_job() -> (pb::Job, Vec<Item>) {
        let created = 1_755_206_255;
        let why = "Training file has 5 example(s), but must have at least 10 examples";
        let mut log = Log::default();
        log.event(created, "info", &format!("Created fine-tuning job: {JOB}"));
        log.event(
            created,
            "info",
            "Validating training file: file-N3SARt13fXqmcvg5bHyCzx",
        );
        log.event(created + 12, "error", why);
        let mut done = job(pb::JobState::Failed);
        done.error = Some(pb::JobError {
            code: "invalid_n_examples".into(),
            message: why.into(),
            param: "training_file".into(),
        });
        // A stale estimate on the final snapshot must not reach any line.
        done.estimated_finish_time = ts(created + 900);
        log.state(
            created + 13,
            done.clone(),
            &format!("Failed: {why} (invalid_n_examples)"),
        );
        let mut items = vec![Item::Snapshot(job(pb::JobState::ValidatingFiles))];
        items.extend(log.0);
        (done, items)
    }

    /// A `Write` whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Rc<RefCell<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn plain((done, items): (pb::Job, Vec<Item>)) -> String {
        let out = Captured::default();
        let mut display = Display::text(None, Box::new(out.clone()));
        for item in &items {
            display.show(item);
        }
        display.finish(Some(&done));
        String::from_utf8(out.0.take()).unwrap()
    }

    /// The screen, with the spinner's frame as one character: which frame shows depends on
    /// how fast the updates came (indicatif ticks at most so often), not on the watch.
    fn screen(term: &InMemoryTerm) -> String {
        term.contents()
            .chars()
            .map(|c| {
                if ('\u{2801}'..='\u{28ff}').contains(&c) {
                    '*'
                } else {
                    c
                }
            })
            .collect()
    }

    /// The terminal's screen after the items up to each of `frames` (item counts), and at
    /// the end.
    fn on_terminal((done, items): (pb::Job, Vec<Item>), frames: &[usize]) -> Vec<String> {
        let term = InMemoryTerm::new(40, 160);
        let bar = ProgressBar::with_draw_target(
            None,
            ProgressDrawTarget::term_like(Box::new(term.clone())),
        );
        let mut display = Display::text(Some(bar), Box::new(std::io::sink()));
        let mut screens = Vec::new();
        for (i, item) in items.iter().enumerate() {
            display.show(item);
            if frames.contains(&(i + 1)) {
                screens.push(screen(&term));
            }
        }
        display.finish(Some(&done));
        screens.push(screen(&term));
        screens
    }

    #[test]
    fn plain_watch_of_a_job_that_succeeds() {
        let out = plain(succeeded_job());
        insta::assert_snapshot!(out);
        // Each checkpoint once, before the end; the end last, with no ETA after training.
        assert!(!out.contains("Checkpoint created"));
        assert!(!out.contains("Step "), "no repeated step prefix");
        let last = out.lines().last().unwrap();
        assert!(
            last.starts_with("succeeded: ft:gpt-3.5-turbo-0125:"),
            "{last}"
        );
    }

    #[test]
    fn plain_watch_of_a_job_that_fails_has_no_eta() {
        let out = plain(failed_job());
        insta::assert_snapshot!(out);
        assert!(!out.contains("left"), "{out}");
    }

    #[test]
    fn terminal_watch_shows_a_spinner_until_there_are_steps_then_a_bar() {
        let (done, items) = succeeded_job();
        // After the snapshot (validating), after "Now queued", after step 40, and the end.
        let step_40 = items
            .iter()
            .position(
                |i| matches!(i, Item::Event(e) if e.metrics.as_ref().is_some_and(|m| m.step == 40)),
            )
            .unwrap()
            + 1;
        let screens = on_terminal((done, items), &[1, 7, step_40]);
        insta::assert_snapshot!("terminal_validating", screens[0]);
        insta::assert_snapshot!("terminal_queued", screens[1]);
        insta::assert_snapshot!("terminal_step_40", screens[2]);
        insta::assert_snapshot!("terminal_end", screens[3]);
        assert!(!screens[0].contains('['), "no bar before a step total");
        assert!(screens[2].contains("step 40/100"), "{}", screens[2]);
    }

    #[test]
    fn terminal_watch_of_a_job_that_fails() {
        let screens = on_terminal(failed_job(), &[]);
        insta::assert_snapshot!(screens[0]);
    }
}
