//! Conversions between the job domain and protobuf.

use std::collections::BTreeMap;

use crate::pb;
use finetune_core::domain::job::{
    Checkpoint, EventKind, Hyperparameters, Job, JobEvent, JobState, Method, Metrics,
};
use finetune_core::error::Error;
use finetune_core::jobs::WatchItem;

pub(super) fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub(super) fn state(s: JobState) -> pb::JobState {
    match s {
        JobState::Creating | JobState::ValidatingFiles => pb::JobState::ValidatingFiles,
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
        JobState::Paused => pb::JobState::Paused,
        JobState::Unknown => pb::JobState::Unspecified,
    }
}

pub(super) fn state_filter(s: i32) -> Result<Option<JobState>, Error> {
    let s = pb::JobState::try_from(s)
        .map_err(|_| Error::invalid("state", format!("unknown state {s}")))?;
    Ok(match s {
        pb::JobState::Unspecified => None,
        pb::JobState::ValidatingFiles => Some(JobState::ValidatingFiles),
        pb::JobState::Queued => Some(JobState::Queued),
        pb::JobState::Running => Some(JobState::Running),
        pb::JobState::Succeeded => Some(JobState::Succeeded),
        pb::JobState::Failed => Some(JobState::Failed),
        pb::JobState::Cancelled => Some(JobState::Cancelled),
        pb::JobState::Paused => Some(JobState::Paused),
    })
}

pub(super) fn method_from(m: i32) -> Result<Method, Error> {
    match pb::TrainingMethod::try_from(m) {
        Ok(pb::TrainingMethod::Unspecified | pb::TrainingMethod::Supervised) => {
            Ok(Method::Supervised)
        }
        Ok(pb::TrainingMethod::Dpo) => Ok(Method::Dpo),
        Err(_) => Err(Error::invalid("method", format!("unknown method {m}"))),
    }
}

pub(super) fn hyperparameters_from(h: Option<pb::Hyperparameters>) -> Hyperparameters {
    let h = h.unwrap_or_default();
    Hyperparameters {
        n_epochs: h.n_epochs,
        batch_size: h.batch_size,
        learning_rate_multiplier: h.learning_rate_multiplier,
        beta: h.beta,
    }
}

pub(super) fn job(j: &Job) -> pb::Job {
    pb::Job {
        id: j.id.clone(),
        upstream_id: j.upstream_id.clone().unwrap_or_default(),
        request_id: j.request_id.clone().unwrap_or_default(),
        state: state(j.state) as i32,
        upstream_status: j.upstream_status.clone(),
        model: j.model.clone(),
        method: match j.method {
            Method::Supervised => pb::TrainingMethod::Supervised,
            Method::Dpo => pb::TrainingMethod::Dpo,
        } as i32,
        hyperparameters: Some(pb::Hyperparameters {
            n_epochs: j.hyperparameters.n_epochs,
            batch_size: j.hyperparameters.batch_size,
            learning_rate_multiplier: j.hyperparameters.learning_rate_multiplier,
            beta: j.hyperparameters.beta,
        }),
        suffix: j.suffix.clone().unwrap_or_default(),
        training_sha256: j.training_sha256.clone(),
        validation_sha256: j.validation_sha256.clone().unwrap_or_default(),
        fine_tuned_model: j.fine_tuned_model.clone().unwrap_or_default(),
        trained_tokens: j.trained_tokens.unwrap_or_default(),
        estimated_cost_usd: j.estimated_cost_usd,
        actual_cost_usd: j.actual_cost_usd.unwrap_or_default(),
        error: j.error.as_ref().map(|e| pb::JobError {
            code: e.code.clone(),
            message: e.message.clone(),
            param: e.param.clone(),
        }),
        metadata: j
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        create_time: Some(timestamp(j.created_at)),
        update_time: Some(timestamp(j.updated_at)),
        finish_time: j.finished_at.map(timestamp),
        estimated_finish_time: j.estimated_finish.map(timestamp),
        last_sequence: j.last_sequence,
        training_file_id: j.training_file_id.clone().unwrap_or_default(),
        validation_file_id: j.validation_file_id.clone().unwrap_or_default(),
        accepted_problems: j
            .accepted_problems
            .iter()
            .map(super::convert::accepted_problem)
            .collect(),
        estimated_tokens: j.estimated_tokens,
    }
}

fn metrics(m: &Metrics) -> pb::StepMetrics {
    pb::StepMetrics {
        step: m.step,
        total_steps: m.total_steps,
        train_loss: m.train_loss,
        train_mean_token_accuracy: m.train_mean_token_accuracy,
        valid_loss: m.valid_loss,
        valid_mean_token_accuracy: m.valid_mean_token_accuracy,
        full_valid_loss: m.full_valid_loss,
        full_valid_mean_token_accuracy: m.full_valid_mean_token_accuracy,
    }
}

fn checkpoint(c: &Checkpoint) -> pb::Checkpoint {
    pb::Checkpoint {
        id: c.id.clone(),
        step: c.step,
        model: c.model.clone(),
        metrics: Some(metrics(&c.metrics)),
        create_time: Some(timestamp(c.created_at)),
    }
}

pub(super) fn event(e: &JobEvent) -> pb::JobEvent {
    let ev = &e.event;
    pb::JobEvent {
        job_id: e.job_id.clone(),
        sequence: e.sequence,
        kind: match ev.kind {
            EventKind::StateChanged => pb::JobEventKind::StateChanged,
            EventKind::Message => pb::JobEventKind::Message,
            EventKind::Metrics => pb::JobEventKind::Metrics,
            EventKind::Checkpoint => pb::JobEventKind::Checkpoint,
            EventKind::Unknown => pb::JobEventKind::Unspecified,
        } as i32,
        create_time: Some(timestamp(ev.created_at)),
        level: ev.level.clone(),
        message: ev.message.clone(),
        metrics: ev.metrics.as_ref().map(metrics),
        job: ev.job.as_deref().map(job),
        upstream_id: ev.upstream_id.clone().unwrap_or_default(),
        checkpoint: ev.checkpoint.as_ref().map(checkpoint),
    }
}

pub(super) fn watch_item(item: WatchItem) -> pb::WatchJobResponse {
    use pb::watch_job_response::Item;
    let item = match item {
        WatchItem::Snapshot(j) => Item::Snapshot(job(&j)),
        WatchItem::Event(e) => Item::Event(event(&e)),
        WatchItem::Heartbeat { last_sequence, at } => Item::Heartbeat(pb::Heartbeat {
            last_sequence,
            time: Some(timestamp(at)),
        }),
    };
    pb::WatchJobResponse { item: Some(item) }
}

pub(super) fn metadata_from(
    m: std::collections::HashMap<String, String>,
) -> BTreeMap<String, String> {
    m.into_iter().collect()
}
