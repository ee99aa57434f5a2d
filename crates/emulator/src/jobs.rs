//! Fine-tuning jobs, as plain state (the handlers are [`crate::job_routes`]). A job's whole
//! history is a function of the emulated clock: it is `validating_files` for
//! `validating_secs`, `queued` for `queued_secs`, then `running` for `step_secs` per step,
//! then `succeeded`. Nothing runs in the background except the
//! check of its files against OpenAI's published rules ([`crate::training_file`], which
//! shares nothing with the project's validator), whose result fixes the plan: example
//! count, epochs, steps and trained tokens.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::api::{self, ApiError, ApiResult};
use crate::clock::ts;
use crate::files::{Files, StoredFile};
use crate::models;
use crate::training_file::{self, Method};

/// Learning-rate multiplier `auto` resolves to (the recorded succeeded job shows 2).
const AUTO_LEARNING_RATE: f64 = 2.0;
/// DPO `beta` when `auto`.
const AUTO_BETA: f64 = 0.1;
/// Checkpoints are kept for the last this many epochs.
const CHECKPOINT_EPOCHS: u64 = 3;

/// Every job, in creation order.
#[derive(Default, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Jobs {
    pub(crate) items: Vec<Job>,
}

impl Jobs {
    /// Fixes plans whose validation is done and publishes the results file of every job
    /// that has succeeded by `now`.
    pub(crate) fn advance(&mut self, now: f64, files: &mut Files) {
        for job in &mut self.items {
            job.materialize(now, files);
            if !job.results_published && job.phase(now) == Phase::Succeeded {
                job.results_published = true;
                // Published again after a restart (results are derived, not saved),
                // unless the owner deleted them.
                if let Some(file) = job.results_file().filter(|f| !files.was_deleted(&f.id)) {
                    files.insert(file);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The ids of the results files jobs publish (derived, so never saved).
    pub(crate) fn results_file_ids(&self) -> std::collections::HashSet<&str> {
        self.items
            .iter()
            .map(|j| j.results_file_id.as_str())
            .collect()
    }

    /// The file checks a restart cut short, to run again. A job whose training file is
    /// gone fails as OpenAI fails a job whose file was deleted before validation.
    pub(crate) fn unfinished_checks(&self, files: &Files, now: f64) -> Vec<CheckWork> {
        let mut work = Vec::new();
        for job in self.items.iter().filter(|j| j.check.get().is_none()) {
            match files.bytes(&job.training_file) {
                Some(training) => {
                    let validation = job.validation_file.as_deref().and_then(|v| files.bytes(v));
                    work.push(job.check_work(training, validation));
                }
                None => {
                    let _ = job.check.set(Checked {
                        outcome: deleted_training_file(),
                        ready_at: now,
                    });
                }
            }
        }
        work
    }

    pub(crate) fn get(&self, id: &str) -> ApiResult<&Job> {
        self.items
            .iter()
            .find(|j| j.id == id)
            .ok_or_else(|| no_such_job(id))
    }

    /// The base snapshot of a fine-tuned model or checkpoint that exists at `now`.
    pub(crate) fn fine_tuned_base(&self, model: &str, now: f64, org: &str) -> Option<&str> {
        self.items.iter().find_map(|j| {
            let names = j.usable_models(now, org);
            names.iter().any(|n| n == model).then_some(j.base.as_str())
        })
    }

    /// Fine-tuned models that exist at `now`, with when they were created.
    pub(crate) fn fine_tuned_models(&self, now: f64, org: &str) -> Vec<(String, i64)> {
        self.items
            .iter()
            .filter(|j| j.phase(now) == Phase::Succeeded)
            .filter_map(|j| {
                let finished = j.finished()?;
                Some((j.model_name(org), ts(finished)))
            })
            .collect()
    }
}

pub(crate) fn no_such_job(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("No such fine-tuning job: {id}"),
    )
    .param("fine_tuning_job_id")
}

fn deleted_training_file() -> Outcome {
    Outcome::Fail(JobError {
        code: "deleted_training_file".to_owned(),
        param: Some("training_file".to_owned()),
        message: "The job failed because the training file was deleted".to_owned(),
    })
}

/// What the file check of a job needs, to run in the background.
pub(crate) struct CheckWork {
    check: Arc<OnceLock<Checked>>,
    training: Bytes,
    validation: Option<Bytes>,
    base: String,
    method: Method,
    requested: Requested,
}

impl CheckWork {
    /// Checks the files by OpenAI's published rules and records the verdict, ready at
    /// `now()`. CPU work: the caller runs it off the async workers.
    pub(crate) fn run(self, now: impl FnOnce() -> f64) {
        let training_context = models::find(&self.base)
            .and_then(|m| m.training_context)
            .unwrap_or(models::FALLBACK_TRAINING_CONTEXT);
        let outcome = check_files(
            &self.training,
            self.validation.as_deref(),
            &self.base,
            self.method,
            self.requested,
            training_context,
        );
        let _ = self.check.set(Checked {
            outcome,
            ready_at: now(),
        });
    }
}

/// Training examples OpenAI requires [GUIDE]; fewer fail the job with `invalid_n_examples`.
const MIN_EXAMPLES: u64 = 10;

pub(crate) fn method_name(method: Method) -> &'static str {
    match method {
        Method::Supervised => "supervised",
        Method::Dpo => "dpo",
    }
}

/// Hyperparameters as requested; None is `auto`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Requested {
    pub(crate) n_epochs: Option<u32>,
    pub(crate) batch_size: Option<u32>,
    pub(crate) learning_rate_multiplier: Option<f64>,
    pub(crate) beta: Option<f64>,
}

/// What validation decided for a job that can train.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Train {
    epochs: u32,
    batch_size: u32,
    learning_rate_multiplier: f64,
    beta: f64,
    steps_per_epoch: u64,
    trained_tokens: u64,
    has_validation: bool,
}

impl Train {
    fn steps(&self) -> u64 {
        self.steps_per_epoch * u64::from(self.epochs)
    }
}

/// A failed job's `error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobError {
    code: String,
    param: Option<String>,
    message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Outcome {
    Train(Train),
    Fail(JobError),
}

/// The file check's verdict and the emulated time it was ready.
#[derive(Serialize, Deserialize)]
pub(crate) struct Checked {
    outcome: Outcome,
    ready_at: f64,
}

/// The job's fixed timeline once validation is over.
pub(crate) struct Plan {
    validated: f64,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Validating,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Phase {
    fn status(self) -> &'static str {
        match self {
            Phase::Validating => "validating_files",
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }

    pub(crate) fn terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

/// Phase durations in emulated seconds, fixed when the job is created.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Timing {
    pub(crate) validating: f64,
    pub(crate) queued: f64,
    pub(crate) step: f64,
}

/// A job as the emulator keeps it (and saves it, with a data dir): what was asked and
/// what the file check found. Its plan, events, checkpoints and model are derived from
/// these and the clock, so they are not saved.
#[derive(Serialize, Deserialize)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) created: f64,
    /// The `model` field: the resolved snapshot, or the `ft:` model training continues from.
    pub(crate) model: String,
    /// The base snapshot (first segment of the new `ft:` name).
    pub(crate) base: String,
    pub(crate) training_file: String,
    pub(crate) validation_file: Option<String>,
    pub(crate) suffix: Option<String>,
    pub(crate) seed: i64,
    pub(crate) metadata: Option<Map<String, Value>>,
    pub(crate) integrations: Vec<Value>,
    pub(crate) method: Method,
    pub(crate) requested: Requested,
    pub(crate) timing: Timing,
    #[serde(with = "saved_check")]
    pub(crate) check: Arc<OnceLock<Checked>>,
    #[serde(skip)]
    pub(crate) plan: Option<Plan>,
    pub(crate) cancelled_at: Option<f64>,
    /// The 8-character id ending the `ft:` name.
    pub(crate) model_id: String,
    /// Prefix of event and checkpoint ids.
    pub(crate) key: String,
    pub(crate) results_file_id: String,
    #[serde(skip)]
    pub(crate) results_published: bool,
}

/// The file check of a saved job: its verdict once known.
mod saved_check {
    use std::sync::{Arc, OnceLock};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Checked;

    pub(super) fn serialize<S: Serializer>(
        check: &Arc<OnceLock<Checked>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        check.get().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<OnceLock<Checked>>, D::Error> {
        let lock = OnceLock::new();
        if let Some(checked) = Option::<Checked>::deserialize(d)? {
            let _ = lock.set(checked);
        }
        Ok(Arc::new(lock))
    }
}

impl Job {
    /// The emulated time the job's history stops at: now, or when it was cancelled.
    pub(crate) fn horizon(&self, now: f64) -> f64 {
        self.cancelled_at.map_or(now, |c| c.min(now))
    }

    fn materialize(&mut self, now: f64, files: &Files) {
        if self.plan.is_some() {
            return;
        }
        let t = self.horizon(now);
        let Some(checked) = self.check.get() else {
            return;
        };
        let validated = (self.created + self.timing.validating).max(checked.ready_at);
        if validated > t {
            return;
        }
        let deleted = files
            .gone_at(&self.training_file)
            .is_some_and(|gone| gone <= validated);
        let outcome = if deleted {
            deleted_training_file()
        } else {
            checked.outcome.clone()
        };
        tracing::debug!(job_id = %self.id, ?outcome, "job validated");
        self.plan = Some(Plan { validated, outcome });
    }

    pub(crate) fn train(&self) -> Option<(&Plan, &Train)> {
        let plan = self.plan.as_ref()?;
        match &plan.outcome {
            Outcome::Train(t) => Some((plan, t)),
            Outcome::Fail(_) => None,
        }
    }

    fn started(&self) -> Option<f64> {
        self.train()
            .map(|(plan, _)| plan.validated + self.timing.queued)
    }

    pub(crate) fn step_time(&self, step: u64) -> Option<f64> {
        Some(self.started()? + step as f64 * self.timing.step)
    }

    fn finished(&self) -> Option<f64> {
        let (_, train) = self.train()?;
        self.step_time(train.steps())
    }

    pub(crate) fn phase(&self, now: f64) -> Phase {
        if self.cancelled_at.is_some_and(|c| c <= now) {
            return Phase::Cancelled;
        }
        let Some(plan) = &self.plan else {
            return Phase::Validating;
        };
        if now < plan.validated {
            return Phase::Validating;
        }
        match &plan.outcome {
            Outcome::Fail(_) => Phase::Failed,
            Outcome::Train(_) => {
                if self.started().is_some_and(|s| now < s) {
                    Phase::Queued
                } else if self.finished().is_some_and(|f| now < f) {
                    Phase::Running
                } else {
                    Phase::Succeeded
                }
            }
        }
    }

    pub(crate) fn check_work(&self, training: Bytes, validation: Option<Bytes>) -> CheckWork {
        CheckWork {
            check: self.check.clone(),
            training,
            validation,
            base: self.base.clone(),
            method: self.method,
            requested: self.requested,
        }
    }

    fn model_name(&self, org: &str) -> String {
        format!(
            "ft:{}:{}:{}:{}",
            self.base,
            org,
            self.suffix.as_deref().unwrap_or(""),
            self.model_id
        )
    }

    /// Steps with a checkpoint: the ends of the last three epochs.
    pub(crate) fn checkpoint_steps(&self) -> Vec<u64> {
        let Some((_, train)) = self.train() else {
            return Vec::new();
        };
        let epochs = u64::from(train.epochs);
        (epochs.saturating_sub(CHECKPOINT_EPOCHS - 1).max(1)..=epochs)
            .map(|e| e * train.steps_per_epoch)
            .collect()
    }

    pub(crate) fn checkpoint_model(&self, step: u64, org: &str) -> String {
        let final_step = self.train().map_or(0, |(_, t)| t.steps());
        if step == final_step {
            self.model_name(org)
        } else {
            format!(
                "ft:{}:{}:{}:{}:ckpt-step-{step}",
                self.base,
                org,
                self.suffix.as_deref().unwrap_or(""),
                api::derived_id(&format!("{}:{step}", self.key), 8)
            )
        }
    }

    /// Model names usable for chat at `now`: the final model and the checkpoints so far.
    fn usable_models(&self, now: f64, org: &str) -> Vec<String> {
        let t = self.horizon(now);
        self.checkpoint_steps()
            .into_iter()
            .filter(|&s| self.step_time(s).is_some_and(|at| at <= t))
            .map(|s| self.checkpoint_model(s, org))
            .collect()
    }

    /// Deterministic, falling metrics for `step` (1-based).
    pub(crate) fn metrics(&self, train: &Train, step: u64) -> StepMetrics {
        let steps = train.steps().max(1) as f64;
        let p = step as f64 / steps;
        let seed = self.seed as u64;
        let start_loss = 1.2 + 1.3 * unit(seed, 0);
        let noise = |salt: u64| 1.0 + 0.12 * (unit(seed, step * 4 + salt) - 0.5);
        let train_loss = (start_loss * (-4.0 * p).exp() + 0.015) * noise(1);
        let train_acc = (0.52 + 0.47 * (1.0 - (-4.5 * p).exp()))
            * (1.0 + 0.02 * (unit(seed, step * 4 + 2) - 0.5));
        let train_acc = train_acc.min(1.0);
        let epoch_end = step % train.steps_per_epoch == 0;
        let (valid_loss, valid_acc) = if train.has_validation {
            let l = train_loss * (1.08 + 0.15 * unit(seed, step * 4 + 3));
            (Some(l), Some((train_acc * 0.97).min(1.0)))
        } else {
            (None, None)
        };
        let (full_valid_loss, full_valid_acc) = match (valid_loss, valid_acc) {
            (Some(l), Some(a)) if epoch_end => (Some(l * 1.04), Some(a * 0.99)),
            _ => (None, None),
        };
        StepMetrics {
            train_loss,
            train_acc,
            valid_loss,
            valid_acc,
            full_valid_loss,
            full_valid_acc,
        }
    }

    /// Every event the job has had or will have (given its plan), oldest first, with the
    /// emulated time of each. A cancellation ends the list.
    pub(crate) fn timeline(&self) -> Vec<(f64, Ev)> {
        let mut out = vec![(self.created, Ev::Created), (self.created, Ev::Validating)];
        if let Some(plan) = &self.plan {
            match &plan.outcome {
                Outcome::Fail(_) => out.push((plan.validated, Ev::Failed)),
                Outcome::Train(train) => {
                    out.push((plan.validated, Ev::Validated));
                    let started = plan.validated + self.timing.queued;
                    out.push((started, Ev::Started));
                    let checkpoints = self.checkpoint_steps();
                    for step in 1..=train.steps() {
                        let at = started + step as f64 * self.timing.step;
                        out.push((at, Ev::Step(step)));
                        if checkpoints.contains(&step) {
                            out.push((at, Ev::Checkpoint(step)));
                        }
                    }
                    let finished = started + train.steps() as f64 * self.timing.step;
                    out.push((finished, Ev::ModelCreated));
                    out.push((finished, Ev::Completed));
                }
            }
        }
        if let Some(c) = self.cancelled_at {
            out.retain(|(t, _)| *t <= c);
            out.push((c, Ev::Cancelled));
        }
        out
    }

    fn event_id(&self, seq: usize) -> String {
        format!("ftevent-{}{}", self.key, api::base62(seq as u64, 8))
    }

    pub(crate) fn render_event(&self, seq: usize, at: f64, ev: Ev, org: &str) -> EventObject {
        let empty = || Value::Object(Map::new());
        let (level, message, data, kind) = match ev {
            Ev::Created => (
                "info",
                format!("Created fine-tuning job: {}", self.id),
                empty(),
                "message",
            ),
            Ev::Validating => {
                let mut m = format!("Validating training file: {}", self.training_file);
                if let Some(v) = &self.validation_file {
                    m.push_str(&format!(" and validation file: {v}"));
                }
                ("info", m, empty(), "message")
            }
            Ev::Validated => (
                "info",
                "Files validated, moving job to queued state".to_owned(),
                empty(),
                "message",
            ),
            Ev::Started => (
                "info",
                "Fine-tuning job started".to_owned(),
                empty(),
                "message",
            ),
            Ev::Step(step) => {
                let Some((_, train)) = self.train() else {
                    return self.render_event(seq, at, Ev::Created, org);
                };
                let m = self.metrics(train, step);
                let mut message = format!(
                    "Step {step}/{}: training loss={:.2}",
                    train.steps(),
                    m.train_loss
                );
                let mut data = serde_json::json!({
                    "step": step,
                    "train_loss": m.train_loss,
                    "total_steps": train.steps(),
                    "train_mean_token_accuracy": m.train_acc,
                });
                if let (Some(l), Some(a)) = (m.valid_loss, m.valid_acc) {
                    message.push_str(&format!(", validation loss={l:.2}"));
                    data["valid_loss"] = l.into();
                    data["valid_mean_token_accuracy"] = a.into();
                }
                if let (Some(l), Some(a)) = (m.full_valid_loss, m.full_valid_acc) {
                    message.push_str(&format!(", full validation loss={l:.2}"));
                    data["full_valid_loss"] = l.into();
                    data["full_valid_mean_token_accuracy"] = a.into();
                }
                ("info", message, data, "metrics")
            }
            Ev::Checkpoint(step) => (
                "info",
                format!("Checkpoint created at step {step}"),
                empty(),
                "message",
            ),
            Ev::ModelCreated => (
                "info",
                format!("New fine-tuned model created: {}", self.model_name(org)),
                empty(),
                "message",
            ),
            Ev::Completed => (
                "info",
                "The job has successfully completed".to_owned(),
                empty(),
                "message",
            ),
            Ev::Failed => {
                let message = match self.plan.as_ref().map(|p| &p.outcome) {
                    Some(Outcome::Fail(e)) => e.message.clone(),
                    _ => "The job failed".to_owned(),
                };
                ("error", message, empty(), "message")
            }
            Ev::Cancelled => (
                "info",
                "Fine-tuning job cancelled".to_owned(),
                empty(),
                "message",
            ),
        };
        EventObject {
            object: "fine_tuning.job.event",
            id: self.event_id(seq),
            created_at: ts(at),
            level,
            message,
            data,
            kind,
        }
    }

    /// The results CSV as a file, created when the job finished.
    fn results_file(&self) -> Option<StoredFile> {
        let (_, train) = self.train()?;
        let mut csv =
            String::from("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n");
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        for step in 1..=train.steps() {
            let m = self.metrics(train, step);
            csv.push_str(&format!(
                "{step},{},{},{},{}\n",
                m.train_loss,
                m.train_acc,
                opt(m.valid_loss),
                opt(m.valid_acc)
            ));
        }
        Some(StoredFile {
            id: self.results_file_id.clone(),
            filename: "step_metrics.csv".to_owned(),
            purpose: "fine-tune-results".to_owned(),
            data: Bytes::from(csv),
            created_at: ts(self.finished()?),
            expires_at: None,
        })
    }

    pub(crate) fn render(&self, now: f64, org: &str, org_id: &str) -> JobObject<'_> {
        let phase = self.phase(now);
        let horizon = self.horizon(now);
        // Resolved numbers once training has started, as OpenAI shows them.
        let resolved = self
            .train()
            .filter(|_| self.started().is_some_and(|s| horizon >= s))
            .map(|(_, t)| t);
        let r = &self.requested;
        let (n_epochs, batch_size, lr, beta) = match resolved {
            Some(t) => (
                Hyper::Int(t.epochs),
                Hyper::Int(t.batch_size),
                Hyper::Num(t.learning_rate_multiplier),
                Hyper::Num(t.beta),
            ),
            None => (
                r.n_epochs.map_or(Hyper::Auto, Hyper::Int),
                r.batch_size.map_or(Hyper::Auto, Hyper::Int),
                r.learning_rate_multiplier.map_or(Hyper::Auto, Hyper::Num),
                r.beta.map_or(Hyper::Auto, Hyper::Num),
            ),
        };
        let method_hyper = MethodHyper {
            beta: (self.method == Method::Dpo).then_some(beta),
            batch_size,
            learning_rate_multiplier: lr,
            n_epochs,
        };
        let succeeded = phase == Phase::Succeeded;
        let error = match (&self.plan, phase) {
            (
                Some(Plan {
                    outcome: Outcome::Fail(e),
                    ..
                }),
                Phase::Failed,
            ) => Some(e),
            _ => None,
        };
        JobObject {
            object: "fine_tuning.job",
            id: &self.id,
            model: &self.model,
            created_at: ts(self.created),
            finished_at: if succeeded {
                self.finished().map(ts)
            } else {
                None
            },
            fine_tuned_model: succeeded.then(|| self.model_name(org)),
            organization_id: org_id.to_owned(),
            result_files: if succeeded {
                vec![self.results_file_id.clone()]
            } else {
                Vec::new()
            },
            status: phase.status(),
            validation_file: self.validation_file.as_deref(),
            training_file: &self.training_file,
            hyperparameters: TopHyper {
                n_epochs,
                batch_size,
                learning_rate_multiplier: lr,
            },
            trained_tokens: if succeeded {
                resolved.map(|t| t.trained_tokens)
            } else {
                None
            },
            error: ErrorField(error),
            user_provided_suffix: self.suffix.as_deref(),
            seed: self.seed,
            estimated_finish: if phase == Phase::Running {
                self.finished().map(ts)
            } else {
                None
            },
            integrations: &self.integrations,
            metadata: self.metadata.as_ref(),
            usage_metrics: None,
            shared_with_openai: false,
            eval_id: None,
            method: MethodObject {
                kind: method_name(self.method),
                supervised: (self.method == Method::Supervised).then_some(MethodBody {
                    hyperparameters: method_hyper,
                }),
                dpo: (self.method == Method::Dpo).then_some(MethodBody {
                    hyperparameters: method_hyper,
                }),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Ev {
    Created,
    Validating,
    Validated,
    Started,
    Step(u64),
    Checkpoint(u64),
    ModelCreated,
    Completed,
    Failed,
    Cancelled,
}

pub(crate) struct StepMetrics {
    pub(crate) train_loss: f64,
    pub(crate) train_acc: f64,
    pub(crate) valid_loss: Option<f64>,
    pub(crate) valid_acc: Option<f64>,
    pub(crate) full_valid_loss: Option<f64>,
    pub(crate) full_valid_acc: Option<f64>,
}

/// A uniform number in [0, 1) from `seed` and `salt` (splitmix64).
fn unit(seed: u64, salt: u64) -> f64 {
    let mut z = seed
        .wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A hyperparameter: `"auto"` or a number.
#[derive(Debug, Clone, Copy)]
enum Hyper {
    Auto,
    Int(u32),
    Num(f64),
}

impl Serialize for Hyper {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Hyper::Auto => s.serialize_str("auto"),
            Hyper::Int(i) => s.serialize_u32(*i),
            Hyper::Num(f) => s.serialize_f64(*f),
        }
    }
}

#[derive(Serialize)]
struct TopHyper {
    n_epochs: Hyper,
    batch_size: Hyper,
    learning_rate_multiplier: Hyper,
}

#[derive(Serialize, Clone, Copy)]
struct MethodHyper {
    #[serde(skip_serializing_if = "Option::is_none")]
    beta: Option<Hyper>,
    batch_size: Hyper,
    learning_rate_multiplier: Hyper,
    n_epochs: Hyper,
}

#[derive(Serialize)]
struct MethodBody {
    hyperparameters: MethodHyper,
}

#[derive(Serialize)]
struct MethodObject {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    supervised: Option<MethodBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dpo: Option<MethodBody>,
}

/// `error`: `{}` on a healthy job, as OpenAI sends it (not null).
struct ErrorField<'a>(Option<&'a JobError>);

impl Serialize for ErrorField<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(e) => e.serialize(s),
            None => Map::new().serialize(s),
        }
    }
}

/// `FineTuningJob`, fields in the order OpenAI sends them.
#[derive(Serialize)]
pub(crate) struct JobObject<'a> {
    object: &'static str,
    id: &'a str,
    model: &'a str,
    created_at: i64,
    finished_at: Option<i64>,
    fine_tuned_model: Option<String>,
    organization_id: String,
    result_files: Vec<String>,
    status: &'static str,
    validation_file: Option<&'a str>,
    training_file: &'a str,
    hyperparameters: TopHyper,
    trained_tokens: Option<u64>,
    error: ErrorField<'a>,
    user_provided_suffix: Option<&'a str>,
    seed: i64,
    estimated_finish: Option<i64>,
    integrations: &'a [Value],
    metadata: Option<&'a Map<String, Value>>,
    usage_metrics: Option<Value>,
    shared_with_openai: bool,
    eval_id: Option<String>,
    method: MethodObject,
}

#[derive(Serialize)]
pub(crate) struct EventObject {
    object: &'static str,
    id: String,
    created_at: i64,
    level: &'static str,
    message: String,
    data: Value,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// Checks the job's files by OpenAI's published rules ([`training_file`]) and plans the
/// training: the job's `trained_tokens` is the emulator's own count, not the validator's
/// estimate.
fn check_files(
    training: &[u8],
    validation: Option<&[u8]>,
    base: &str,
    method: Method,
    requested: Requested,
    training_context: u64,
) -> Outcome {
    let fail = |param: &str, message: String| {
        Outcome::Fail(JobError {
            code: "invalid_file_format".to_owned(),
            param: Some(param.to_owned()),
            message,
        })
    };
    let bpe = training_file::tokenizer_for(base);
    let train = match training_file::check_file(training, method, bpe, training_context) {
        Ok(t) => t,
        Err(e) => return fail("training_file", e.to_string()),
    };
    if let Some(v) = validation {
        if let Err(e) = training_file::check_file(v, method, bpe, training_context) {
            return fail("validation_file", e.to_string());
        }
    }
    let n = train.examples;
    if n < MIN_EXAMPLES {
        return Outcome::Fail(JobError {
            code: "invalid_n_examples".to_owned(),
            param: Some("training_file".to_owned()),
            message: format!(
                "Training file has {n} example(s), but must have at least {MIN_EXAMPLES} examples"
            ),
        });
    }
    let epochs = requested
        .n_epochs
        .unwrap_or_else(|| training_file::auto_epochs(n));
    let batch_size = requested.batch_size.unwrap_or(1);
    Outcome::Train(Train {
        epochs,
        batch_size,
        learning_rate_multiplier: requested
            .learning_rate_multiplier
            .unwrap_or(AUTO_LEARNING_RATE),
        beta: requested.beta.unwrap_or(AUTO_BETA),
        steps_per_epoch: n.div_ceil(u64::from(batch_size)),
        trained_tokens: train.tokens_per_epoch * u64::from(epochs),
        has_validation: validation.is_some(),
    })
}
