//! What `finetune watch` shows of each stream item, as text. Pure: the plain and the
//! terminal displays print the same lines, and the tests pin them.

use super::{state_name, terminal};
use crate::cli::client::time;
use crate::pb;
use crate::pb::watch_job_response::Item;

/// Steps whose line the watch prints besides the first and the last (a bar shows them all).
const STEP_LINE_EVERY: u64 = 10;

/// The progress display after an item.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Progress {
    /// No step total yet (validating, queued): a spinner and the state.
    Waiting(String),
    /// Training: the bar at `step` of `total`, and what follows it.
    Steps {
        step: u64,
        total: u64,
        status: String,
    },
    /// The job is over: no progress display.
    Done,
}

/// What one item shows: a line to print, and the progress display when it changed.
#[derive(Debug, Default)]
pub(super) struct Shown {
    pub(super) line: Option<String>,
    pub(super) progress: Option<Progress>,
}

/// Turns items into lines, remembering what the ETA needs.
#[derive(Debug, Default)]
pub(super) struct Render {
    /// OpenAI's estimated end of training (unix seconds, OpenAI's clock), while running.
    estimated_finish: Option<i64>,
    /// The first step seen and its time on OpenAI's clock: the pace is measured from it.
    first_step: Option<(u64, i64)>,
    /// Whether a step was seen, so a later "running" keeps the bar.
    stepping: bool,
    /// Whether the job had ended when the watch began: its replayed steps get no ETA, which
    /// would read as time still to wait.
    ended: bool,
}

impl Render {
    pub(super) fn item(&mut self, item: &Item) -> Shown {
        match item {
            Item::Snapshot(job) => {
                self.job(job);
                self.ended = terminal(job.state);
                Shown {
                    line: Some(format!(
                        "job {} ({}) {} on {}, created {}",
                        job.id,
                        job.upstream_id,
                        state_name(job.state),
                        job.model,
                        time(job.create_time.as_ref())
                    )),
                    progress: Some(self.state_progress(job)),
                }
            }
            Item::Event(e) => self.event(e),
            Item::Heartbeat(_) => Shown::default(),
        }
    }

    fn job(&mut self, job: &pb::Job) {
        self.estimated_finish = job
            .estimated_finish_time
            .as_ref()
            .map(|t| t.seconds)
            .filter(|_| !terminal(job.state));
    }

    fn state_progress(&self, job: &pb::Job) -> Progress {
        if terminal(job.state) {
            Progress::Done
        } else {
            Progress::Waiting(state_name(job.state).to_owned())
        }
    }

    fn event(&mut self, e: &pb::JobEvent) -> Shown {
        let at = e.create_time.as_ref().map_or(0, |t| t.seconds);
        if let Some(m) = &e.metrics {
            return self.step(e.sequence, &e.message, m, at);
        }
        if let Some(c) = &e.checkpoint {
            return line(format!(
                "#{} checkpoint at step {}: {}",
                e.sequence, c.step, c.model
            ));
        }
        if let Some(job) = &e.job {
            self.job(job);
            if terminal(job.state) {
                // The end is the watch's last line, with the figures: see `end_line`.
                return Shown {
                    line: None,
                    progress: Some(Progress::Done),
                };
            }
            let running = job.state == pb::JobState::Running as i32;
            let text = if e.message.is_empty() {
                format!("Now {}", state_name(job.state))
            } else {
                e.message.clone()
            };
            return Shown {
                line: Some(format!("#{} {text}", e.sequence)),
                progress: (!(running && self.stepping)).then(|| self.state_progress(job)),
            };
        }
        match e.level.as_str() {
            "" | "info" => line(format!("#{} {}", e.sequence, e.message)),
            "warn" => line(format!("#{} warning: {}", e.sequence, e.message)),
            level => line(format!("#{} {level}: {}", e.sequence, e.message)),
        }
    }

    fn step(&mut self, sequence: u64, message: &str, m: &pb::StepMetrics, at: i64) -> Shown {
        self.stepping = true;
        let eta = self.remaining(m.step, m.total_steps, at).map(about);
        if self.first_step.is_none() {
            self.first_step = Some((m.step, at));
        }
        // OpenAI's message repeats the step ("Step 3/91: training loss=2.26"): keep the rest.
        let prefix = format!("Step {}/{}: ", m.step, m.total_steps);
        let detail = match message.strip_prefix(&prefix) {
            Some(rest) => rest.to_owned(),
            None if message.is_empty() => m
                .train_loss
                .map_or_else(String::new, |l| format!("training loss={l:.2}")),
            None => message.to_owned(),
        };
        let status = match &eta {
            Some(eta) => format!("{detail}, {eta}"),
            None => detail.clone(),
        };
        let shown_step = m.step == 1 || m.step % STEP_LINE_EVERY == 0 || m.step == m.total_steps;
        let total = if m.total_steps > 0 {
            format!("/{}", m.total_steps)
        } else {
            String::new()
        };
        Shown {
            line: shown_step.then(|| {
                let eta = eta.map(|e| format!(" ({e})")).unwrap_or_default();
                format!("#{sequence} step {}{total}: {detail}{eta}", m.step)
            }),
            progress: Some(if m.total_steps > 0 {
                Progress::Steps {
                    step: m.step,
                    total: m.total_steps,
                    status,
                }
            } else {
                Progress::Waiting(format!("running, step {}", m.step))
            }),
        }
    }

    /// Seconds of training left at `step`, on OpenAI's clock (the emulator's runs faster
    /// than the local one, so the local clock has no say): from the pace since the first
    /// step seen, or else OpenAI's estimate. None at the end or when it would be past.
    fn remaining(&self, step: u64, total: u64, at: i64) -> Option<i64> {
        if self.ended || step >= total {
            return None;
        }
        let left = match self.first_step {
            Some((first, since)) if step > first && at > since => {
                let per_step = (at - since) as f64 / (step - first) as f64;
                (per_step * (total - step) as f64).round() as i64
            }
            _ => self.estimated_finish? - at,
        };
        (left > 0).then_some(left)
    }
}

fn line(text: String) -> Shown {
    Shown {
        line: Some(text),
        progress: None,
    }
}

/// `about 3m left`: seconds under a minute, else to the nearest minute.
fn about(seconds: i64) -> String {
    let minutes = (seconds + 30) / 60;
    if seconds < 60 {
        format!("about {seconds}s left")
    } else if minutes < 60 {
        format!("about {minutes}m left")
    } else {
        format!("about {}h {}m left", minutes / 60, minutes % 60)
    }
}

/// The watch's last line: how the job ended, with what OpenAI reported.
pub(super) fn end_line(job: &pb::Job) -> String {
    if job.state == pb::JobState::Succeeded as i32 {
        format!(
            "succeeded: {} ({})",
            job.fine_tuned_model,
            super::actual_against_estimate(job)
        )
    } else {
        let reason = job
            .error
            .as_ref()
            .filter(|e| !e.message.is_empty() || !e.code.is_empty())
            .map(|e| format!(": {} ({})", e.message, e.code))
            .unwrap_or_default();
        format!("{}{reason}", state_name(job.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_is_never_in_the_past_nor_at_the_end() {
        let mut render = Render {
            estimated_finish: Some(1_000),
            ..Render::default()
        };
        assert_eq!(render.remaining(1, 10, 900), Some(100));
        assert_eq!(render.remaining(1, 10, 1_200), None, "past the estimate");
        render.first_step = Some((1, 900));
        assert_eq!(render.remaining(5, 10, 940), Some(50), "10 s a step");
        assert_eq!(render.remaining(10, 10, 990), None, "the last step");
        render.ended = true;
        assert_eq!(
            render.remaining(5, 10, 940),
            None,
            "a finished job's history"
        );
    }

    #[test]
    fn durations_read_as_a_person_plans() {
        assert_eq!(about(45), "about 45s left");
        assert_eq!(about(61), "about 1m left");
        assert_eq!(about(193), "about 3m left");
        assert_eq!(about(3_600), "about 1h 0m left");
        assert_eq!(about(5_000), "about 1h 23m left");
    }
}
