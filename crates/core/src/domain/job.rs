//! The training job as this service records it, and its event log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dataset::Acceptance;

/// Lifecycle state, mirroring OpenAI's status; `Unknown` keeps statuses we do not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted here, not yet created upstream.
    Creating,
    /// OpenAI is checking the training files.
    ValidatingFiles,
    /// Waiting upstream for a training slot.
    Queued,
    /// Training.
    Running,
    /// Finished with a fine-tuned model.
    Succeeded,
    /// Ended with an error (see [`Job::error`]).
    Failed,
    /// Cancelled by a caller.
    Cancelled,
    /// Paused upstream; it can return to running.
    Paused,
    /// A status this service does not know (the raw one is kept in `upstream_status`).
    Unknown,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 9] = [
        JobState::Creating,
        JobState::ValidatingFiles,
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Paused,
        JobState::Unknown,
    ];

    /// How far along OpenAI's one-way lifecycle (validating_files, queued, running, an end)
    /// the state is; `None` off it (paused, which goes back to running, and unknown).
    pub fn progress(self) -> Option<u8> {
        match self {
            JobState::Creating => Some(0),
            JobState::ValidatingFiles => Some(1),
            JobState::Queued => Some(2),
            JobState::Running => Some(3),
            JobState::Succeeded | JobState::Failed | JobState::Cancelled => Some(4),
            JobState::Paused | JobState::Unknown => None,
        }
    }

    /// Whether the job has ended (succeeded, failed or cancelled) and will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// The snake_case name used in the store, the metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Creating => "creating",
            JobState::ValidatingFiles => "validating_files",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Paused => "paused",
            JobState::Unknown => "unknown",
        }
    }
}

/// The training method of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Supervised fine-tuning on chat examples.
    Supervised,
    /// Direct preference optimisation on preferred/non-preferred pairs.
    Dpo,
}

impl Method {
    /// The provider's and the store's name for it: `supervised` or `dpo`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Supervised => "supervised",
            Method::Dpo => "dpo",
        }
    }
}

/// Hyperparameters; `None` means `auto`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    /// Passes over the training file.
    pub n_epochs: Option<u32>,
    /// Examples per training batch.
    pub batch_size: Option<u32>,
    /// Scale applied to the provider's base learning rate.
    pub learning_rate_multiplier: Option<f64>,
    /// DPO only: how strongly the preference pairs pull on the model.
    pub beta: Option<f64>,
}

/// Why a job failed, as the provider (or this service) explained it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    /// Machine-readable code, e.g. `invalid_training_file`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request parameter at fault, or empty.
    pub param: String,
}

/// A training job. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// This service's job id (`job-...`).
    pub id: String,
    /// The provider's job id, once created upstream.
    pub upstream_id: Option<String>,
    /// The caller's idempotency key from StartTraining, if it gave one.
    pub request_id: Option<String>,
    /// The lifecycle state.
    pub state: JobState,
    /// The provider's own status word, shown beside `state`.
    pub upstream_status: String,
    /// The base model being fine-tuned.
    pub model: String,
    /// Supervised or DPO.
    pub method: Method,
    /// The requested values (then the provider's, once it reports them).
    pub hyperparameters: Hyperparameters,
    /// Text added to the fine-tuned model's name.
    pub suffix: Option<String>,
    /// Seed for a reproducible run.
    pub seed: Option<i64>,
    /// SHA-256 of the training dataset (its id in the dataset store).
    pub training_sha256: String,
    /// SHA-256 of the validation dataset, if any.
    pub validation_sha256: Option<String>,
    /// The provider's id of the uploaded training file, once uploaded.
    pub training_file_id: Option<String>,
    /// The provider's id of the uploaded validation file, once uploaded.
    pub validation_file_id: Option<String>,
    /// The model produced, once the job succeeded.
    pub fine_tuned_model: Option<String>,
    /// The token count OpenAI reports once the job succeeded: its own, which need not equal
    /// `estimated_tokens`.
    pub trained_tokens: Option<u64>,
    /// The validation report's billed tokens (0 for an adopted job, or one stored before
    /// this field existed).
    #[serde(default)]
    pub estimated_tokens: u64,
    /// The cost estimated before training, in USD.
    pub estimated_cost_usd: f64,
    /// The cost of the tokens actually trained, in USD, once the job succeeded.
    pub actual_cost_usd: Option<f64>,
    /// Why the job failed, when it did.
    pub error: Option<JobError>,
    /// The caller's key/value tags.
    pub metadata: BTreeMap<String, String>,
    /// When the job was accepted here.
    pub created_at: i64,
    /// When the record last changed.
    pub updated_at: i64,
    /// When the job ended, once it has.
    pub finished_at: Option<i64>,
    /// When the provider expects it to end, while it runs.
    pub estimated_finish: Option<i64>,
    /// Sequence number of the newest event in the job's log (0 when none).
    pub last_sequence: u64,
    /// The store's count of writes to this job. A writer passes the version it read, so a
    /// write based on a stale read is refused rather than overwriting newer state.
    #[serde(default)]
    pub version: u64,
    /// The newest upstream event id already recorded (the poller's cursor).
    pub upstream_event_cursor: Option<String>,
    /// Upstream checkpoint ids already recorded.
    #[serde(default)]
    pub checkpoints_seen: Vec<String>,
    /// Problems the caller accepted when starting the job (sorted, no repeats).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_problems: Vec<Acceptance>,
}

/// How this service's job ids begin (a provider's ids look otherwise).
const JOB_ID_PREFIX: &str = "job-";

/// Whether `id` has the form of this service's job ids, so that a store that lacks it
/// knows no provider holds it either.
pub(crate) fn is_service_job_id(id: &str) -> bool {
    id.starts_with(JOB_ID_PREFIX)
}

impl Job {
    /// A job being created: a new id, the given model and method, everything else empty.
    pub fn creating(model: String, method: Method, now: i64) -> Job {
        Job {
            id: format!("{JOB_ID_PREFIX}{}", uuid::Uuid::new_v4().simple()),
            upstream_id: None,
            request_id: None,
            state: JobState::Creating,
            upstream_status: String::new(),
            model,
            method,
            hyperparameters: Hyperparameters::default(),
            suffix: None,
            seed: None,
            training_sha256: String::new(),
            validation_sha256: None,
            training_file_id: None,
            validation_file_id: None,
            fine_tuned_model: None,
            trained_tokens: None,
            estimated_tokens: 0,
            estimated_cost_usd: 0.0,
            actual_cost_usd: None,
            error: None,
            metadata: BTreeMap::new(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            estimated_finish: None,
            last_sequence: 0,
            version: 0,
            upstream_event_cursor: None,
            checkpoints_seen: Vec::new(),
            accepted_problems: Vec::new(),
        }
    }
}

/// What an event of a job's log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The job changed state (the event carries the new snapshot).
    StateChanged,
    /// A message from the provider.
    Message,
    /// Training metrics at a step.
    Metrics,
    /// A checkpoint was saved.
    Checkpoint,
    /// A kind of provider event this service does not know.
    Unknown,
}

/// Training metrics at one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The step these metrics are for.
    pub step: u64,
    /// Steps in the whole run.
    pub total_steps: u64,
    /// Training loss at this step.
    pub train_loss: Option<f64>,
    /// Share of training tokens predicted correctly at this step.
    pub train_mean_token_accuracy: Option<f64>,
    /// Validation loss on a batch at this step.
    pub valid_loss: Option<f64>,
    /// Share of validation tokens predicted correctly on a batch at this step.
    pub valid_mean_token_accuracy: Option<f64>,
    /// Validation loss on the whole validation file (at epoch ends).
    pub full_valid_loss: Option<f64>,
    /// Token accuracy on the whole validation file (at epoch ends).
    pub full_valid_mean_token_accuracy: Option<f64>,
}

/// A model saved during training, servable under its own name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The provider's checkpoint id.
    pub id: String,
    /// The training step at which it was saved.
    pub step: u64,
    /// The model name to serve it under.
    pub model: String,
    /// The metrics at that step.
    pub metrics: Metrics,
    /// When it was saved.
    pub created_at: i64,
}

/// An event before the store numbers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// What the event records.
    pub kind: EventKind,
    /// When it happened, in unix milliseconds.
    pub created_at: i64,
    /// Severity: `info`, `warn` or `error`.
    pub level: String,
    /// Human-readable text.
    pub message: String,
    /// The provider's event id, which keeps an upstream event from being recorded twice.
    pub upstream_id: Option<String>,
    /// The metrics, for a metrics event.
    pub metrics: Option<Metrics>,
    /// The checkpoint, for a checkpoint event.
    pub checkpoint: Option<Checkpoint>,
    /// The job snapshot after a state change.
    pub job: Option<Box<Job>>,
}

/// A recorded event with its per-job sequence number (1, 2, 3, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job the event belongs to.
    pub job_id: String,
    /// Position in the job's log, from 1, without gaps: the resume point of a watch.
    pub sequence: u64,
    /// The event itself.
    #[serde(flatten)]
    pub event: NewEvent,
}

impl NewEvent {
    /// Whether this event puts the job in a terminal state (the last event of its log).
    pub fn is_terminal(&self) -> bool {
        self.kind == EventKind::StateChanged
            && self.job.as_ref().is_some_and(|j| j.state.is_terminal())
    }
}

impl JobEvent {
    /// Whether this event puts the job in a terminal state (the last event of a watch).
    pub fn is_terminal(&self) -> bool {
        self.event.is_terminal()
    }
}

/// The current time in unix milliseconds (0 before 1970), the unit of every time here.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A state-change event carrying the job snapshot.
pub(crate) fn state_event(job: &Job, message: String) -> NewEvent {
    NewEvent {
        kind: EventKind::StateChanged,
        created_at: now_millis(),
        level: if job.state == JobState::Failed {
            "error"
        } else {
            "info"
        }
        .to_owned(),
        message,
        upstream_id: None,
        metrics: None,
        checkpoint: None,
        job: Some(Box::new(job.clone())),
    }
}

/// Marks a job failed locally (used when its upstream record vanished).
pub(crate) fn fail(job: &mut Job, code: &str, message: &str) {
    job.state = JobState::Failed;
    job.error = Some(JobError {
        code: code.to_owned(),
        message: message.to_owned(),
        param: String::new(),
    });
    job.finished_at = Some(now_millis());
    job.estimated_finish = None;
}
