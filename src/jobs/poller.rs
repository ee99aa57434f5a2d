//! One poller per active job: asks OpenAI for the job and its new events every
//! interval, records them in order, and wakes the job's watchers.

use std::sync::Arc;

use tracing::{Instrument, debug, info, warn};

use super::manager::{JobManager, state_event};
use super::model::{Checkpoint, EventKind, Job, JobError, JobState, Metrics, NewEvent, now_millis};
use crate::dataset::Catalog;
use crate::error::Error;
use crate::upstream::{UpstreamError, types};

/// Events fetched per page when catching up.
const EVENTS_PAGE: u32 = 100;

impl JobManager {
    /// Starts the job's poller unless one is running.
    pub(super) fn spawn_poller(self: &Arc<Self>, job_id: &str) {
        let mut pollers = self.pollers.lock().expect("poller map");
        if pollers.get(job_id).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let this = self.clone();
        let id = job_id.to_owned();
        let span = tracing::info_span!("poller", job_id = %id);
        let poll = async move {
            loop {
                match this.poll_once(&id).await {
                    Ok(true) => {
                        info!(job_id = %id, "job finished; poller stops");
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        warn!(job_id = %id, error = %e, "poll failed; retrying at the next interval")
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(this.config.poll_interval) => {}
                    () = this.shutdown.cancelled() => break,
                }
            }
        };
        let handle = tokio::spawn(poll.instrument(span));
        pollers.insert(job_id.to_owned(), handle);
    }

    /// One poll: records new upstream events, checkpoints and the state change, in that
    /// order. Returns whether the job is finished.
    pub(super) async fn poll_once(&self, job_id: &str) -> Result<bool, Error> {
        let Some(job) = self.store.get(job_id).await? else {
            return Ok(true);
        };
        if job.state.is_terminal() {
            return Ok(true);
        }
        let Some(upstream_id) = job.upstream_id.clone() else {
            return Ok(false);
        };
        let remote = match self.provider.get_job(&upstream_id).await {
            Ok(remote) => remote,
            Err(UpstreamError::NotFound { message, .. }) => {
                let mut gone = job.clone();
                super::manager::fail(&mut gone, "upstream_job_missing", &message);
                let event = state_event(
                    &gone,
                    format!("OpenAI no longer knows job {upstream_id}: {message}"),
                );
                let (saved, _) = self.store.record(&gone, vec![event]).await?;
                self.hub.notify(&saved.id, saved.last_sequence);
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        };

        let mut updated = job.clone();
        let mut events = Vec::new();
        let fresh = self
            .new_upstream_events(&upstream_id, job.upstream_event_cursor.as_deref())
            .await?;
        if let Some(newest) = fresh.last() {
            updated.upstream_event_cursor = Some(newest.id.clone());
        }
        events.extend(fresh.iter().map(event_of));

        let state = JobState::from_upstream(&remote.status);
        if state == JobState::Succeeded {
            let page = self
                .provider
                .list_checkpoints(&upstream_id, None, 100)
                .await?;
            let mut checkpoints: Vec<_> = page
                .data
                .into_iter()
                .filter(|c| !updated.checkpoints_seen.contains(&c.id))
                .collect();
            checkpoints.sort_by_key(|c| c.step_number);
            for c in checkpoints {
                updated.checkpoints_seen.push(c.id.clone());
                events.push(checkpoint_event(&c));
            }
        }
        apply_remote(&mut updated, &remote, &self.catalog);
        if updated.state != job.state || updated.upstream_status != job.upstream_status {
            let message = match (&updated.state, &updated.fine_tuned_model, &updated.error) {
                (JobState::Succeeded, Some(model), _) => format!("Succeeded: {model}"),
                (JobState::Failed, _, Some(e)) => format!("Failed: {} ({})", e.message, e.code),
                (state, _, _) => format!(
                    "Now {} (OpenAI status \"{}\")",
                    state.as_str(),
                    remote.status
                ),
            };
            events.push(state_event(&updated, message));
        }
        if events.is_empty() && updated == job {
            return Ok(false);
        }
        let (saved, appended) = self.store.record(&updated, events).await?;
        if saved.state == JobState::Succeeded && job.state != JobState::Succeeded {
            if let Some(hook) = self.on_success.get() {
                hook(&saved);
            }
        }
        debug!(
            job_id,
            appended = appended.len(),
            state = saved.state.as_str(),
            "recorded poll"
        );
        self.hub.notify(&saved.id, saved.last_sequence);
        Ok(saved.state.is_terminal())
    }

    /// Upstream events newer than `cursor`, oldest first. Events come newest first and
    /// `after` pages towards older ones, so page until the cursor is met.
    async fn new_upstream_events(
        &self,
        upstream_id: &str,
        cursor: Option<&str>,
    ) -> Result<Vec<types::JobEvent>, Error> {
        let mut fresh = Vec::new();
        let mut after: Option<String> = None;
        'pages: loop {
            let page = self
                .provider
                .list_events(upstream_id, after.as_deref(), EVENTS_PAGE)
                .await?;
            let last_id = page.data.last().map(|e| e.id.clone());
            for event in page.data {
                if cursor == Some(event.id.as_str()) {
                    break 'pages;
                }
                fresh.push(event);
            }
            match (page.has_more, last_id) {
                (true, Some(id)) => after = Some(id),
                _ => break,
            }
        }
        fresh.reverse();
        Ok(fresh)
    }
}

/// Copies OpenAI's view of the job into ours.
pub(super) fn apply_remote(job: &mut Job, remote: &types::Job, catalog: &Catalog) {
    job.upstream_status = remote.status.clone();
    job.state = JobState::from_upstream(&remote.status);
    if !remote.model.is_empty() {
        job.model = remote.model.clone();
    }
    job.fine_tuned_model = remote.fine_tuned_model.clone();
    job.trained_tokens = remote.trained_tokens;
    job.estimated_finish = remote.estimated_finish.filter(|t| *t > 0).map(|t| t * 1000);
    job.finished_at = remote.finished_at.map(|t| t * 1000);
    if job.state.is_terminal() && job.finished_at.is_none() {
        job.finished_at = Some(now_millis());
    }
    job.error = remote.failure().map(|e| JobError {
        code: e.code.clone().unwrap_or_default(),
        message: e.message.clone().unwrap_or_default(),
        param: e.param.clone().unwrap_or_default(),
    });
    if let Some(h) = remote.effective_hyperparameters() {
        let num = |v: Option<types::AutoOr>| v.and_then(types::AutoOr::value);
        if let Some(n) = num(h.n_epochs) {
            job.hyperparameters.n_epochs = Some(n as u32);
        }
        if let Some(n) = num(h.batch_size) {
            job.hyperparameters.batch_size = Some(n as u32);
        }
        if let Some(x) = num(h.learning_rate_multiplier) {
            job.hyperparameters.learning_rate_multiplier = Some(x);
        }
        if let Some(x) = num(h.beta) {
            job.hyperparameters.beta = Some(x);
        }
    }
    if let Some(tokens) = job.trained_tokens {
        let price = catalog.resolve(&job.model).info.training_usd_per_1m;
        job.actual_cost_usd = Some(tokens as f64 * price / 1e6);
    }
}

fn metrics_of(m: &types::StepMetrics) -> Metrics {
    Metrics {
        step: m.step.unwrap_or_default(),
        total_steps: m.total_steps.unwrap_or_default(),
        train_loss: m.train_loss,
        train_mean_token_accuracy: m.train_mean_token_accuracy,
        valid_loss: m.valid_loss,
        valid_mean_token_accuracy: m.valid_mean_token_accuracy,
        full_valid_loss: m.full_valid_loss,
        full_valid_mean_token_accuracy: m.full_valid_mean_token_accuracy,
    }
}

fn event_of(e: &types::JobEvent) -> NewEvent {
    let metrics = e.metrics().map(|m| metrics_of(&m));
    let kind = match (e.kind.as_deref(), &metrics) {
        (Some("metrics"), Some(_)) => EventKind::Metrics,
        (Some("message") | None, _) => EventKind::Message,
        _ => EventKind::Unknown,
    };
    NewEvent {
        kind,
        created_at: e.created_at * 1000,
        level: if e.level.is_empty() {
            "info".to_owned()
        } else {
            e.level.clone()
        },
        message: e.message.clone(),
        upstream_id: Some(e.id.clone()),
        metrics,
        checkpoint: None,
        job: None,
    }
}

fn checkpoint_event(c: &types::Checkpoint) -> NewEvent {
    let checkpoint = Checkpoint {
        id: c.id.clone(),
        step: c.step_number,
        model: c.fine_tuned_model_checkpoint.clone(),
        metrics: metrics_of(&c.metrics),
        created_at: c.created_at * 1000,
    };
    NewEvent {
        kind: EventKind::Checkpoint,
        created_at: checkpoint.created_at,
        level: "info".to_owned(),
        message: format!(
            "Checkpoint at step {}: {}",
            c.step_number, c.fine_tuned_model_checkpoint
        ),
        upstream_id: Some(c.id.clone()),
        metrics: None,
        checkpoint: Some(checkpoint),
        job: None,
    }
}
