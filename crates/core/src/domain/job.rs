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
    ValidatingFiles,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Paused,
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

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Supervised,
    Dpo,
}

impl Method {
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
    pub n_epochs: Option<u32>,
    pub batch_size: Option<u32>,
    pub learning_rate_multiplier: Option<f64>,
    pub beta: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
    pub param: String,
}

/// A training job. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub upstream_id: Option<String>,
    pub request_id: Option<String>,
    pub state: JobState,
    pub upstream_status: String,
    pub model: String,
    pub method: Method,
    pub hyperparameters: Hyperparameters,
    pub suffix: Option<String>,
    pub seed: Option<i64>,
    pub training_sha256: String,
    pub validation_sha256: Option<String>,
    pub training_file_id: Option<String>,
    pub validation_file_id: Option<String>,
    pub fine_tuned_model: Option<String>,
    /// The token count OpenAI reports once the job succeeded: its own, which need not equal
    /// `estimated_tokens`.
    pub trained_tokens: Option<u64>,
    /// The validation report's billed tokens (0 for an adopted job, or one stored before
    /// this field existed).
    #[serde(default)]
    pub estimated_tokens: u64,
    pub estimated_cost_usd: f64,
    pub actual_cost_usd: Option<f64>,
    pub error: Option<JobError>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub estimated_finish: Option<i64>,
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
pub fn is_service_job_id(id: &str) -> bool {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    StateChanged,
    Message,
    Metrics,
    Checkpoint,
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub step: u64,
    pub total_steps: u64,
    pub train_loss: Option<f64>,
    pub train_mean_token_accuracy: Option<f64>,
    pub valid_loss: Option<f64>,
    pub valid_mean_token_accuracy: Option<f64>,
    pub full_valid_loss: Option<f64>,
    pub full_valid_mean_token_accuracy: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: String,
    pub step: u64,
    pub model: String,
    pub metrics: Metrics,
    pub created_at: i64,
}

/// An event before the store numbers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub kind: EventKind,
    pub created_at: i64,
    pub level: String,
    pub message: String,
    pub upstream_id: Option<String>,
    pub metrics: Option<Metrics>,
    pub checkpoint: Option<Checkpoint>,
    /// The job snapshot after a state change.
    pub job: Option<Box<Job>>,
}

/// A recorded event with its per-job sequence number (1, 2, 3, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: String,
    pub sequence: u64,
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
