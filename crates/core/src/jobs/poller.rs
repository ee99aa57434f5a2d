//! One poller per active job: asks OpenAI for the job and its new events every
//! interval, records them in order, and wakes the job's watchers.
//!
//! Several processes may share the store, so a process polls a job only while it holds
//! the job's lease there ([`Store::claim_lease`]): each poll renews it first, and a process
//! that finds another holding it stops its poller. A lease keeper claims the leases that
//! lapse (their holder died) every `interval`, so a job goes unpolled for at most the TTL
//! plus one interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::watch::Hub;
use crate::dataset::Catalog;
use crate::domain::job::{Checkpoint, EventKind, Job, JobState, NewEvent, now_millis};
use crate::domain::job::{fail, state_event};
use crate::error::Error;
use crate::ports::{FineTuning, Page, RemoteCheckpoint, RemoteEvent, RemoteJob, UpstreamError};
use crate::store::{Recorded, Store};

/// Events fetched per page when catching up.
const EVENTS_PAGE: u32 = 100;
/// Checkpoints fetched per page.
const CHECKPOINTS_PAGE: u32 = 100;
/// Tries of a write that keeps losing to other writers before giving up for now.
pub(super) const WRITE_ATTEMPTS: usize = 5;

/// What happens when a job is recorded as succeeded (auto-promotion).
pub type SuccessHook = Box<dyn Fn(&Job) + Send + Sync>;

/// The pollers of this process: one task per active job.
pub(super) struct Poller {
    pub(super) store: Arc<dyn Store>,
    pub(super) provider: Arc<dyn FineTuning>,
    pub(super) catalog: Arc<Catalog>,
    pub(super) hub: Arc<Hub>,
    pub(super) interval: Duration,
    /// This process's name in the lease table: unique per process.
    pub(super) holder: String,
    /// How long a lease outlives its last renewal.
    pub(super) lease_ttl: Duration,
    pub(super) shutdown: CancellationToken,
    /// Called once when a job is recorded as succeeded.
    pub(super) on_success: OnceLock<SuccessHook>,
    pub(super) tasks: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl Poller {
    /// Starts the job's poller unless one is running; whether it started one. The poller
    /// polls only while this process holds the job's lease.
    pub(super) fn spawn(self: &Arc<Self>, job_id: &str) -> bool {
        let mut pollers = self.tasks.lock().expect("poller map");
        if pollers.get(job_id).is_some_and(|h| !h.is_finished()) {
            return false;
        }
        let this = self.clone();
        let id = job_id.to_owned();
        let span = tracing::info_span!("poller", job_id = %id);
        let poll = async move {
            loop {
                match this
                    .store
                    .claim_lease(&id, &this.holder, this.lease_ttl)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        info!(job_id = %id, "another process holds the job's lease and polls it; poller stops");
                        break;
                    }
                    Err(e) => {
                        // Without a renewed lease another process may be polling: wait.
                        warn!(job_id = %id, error = %e, "cannot renew the job's lease; not polling until it can");
                        tokio::select! {
                            () = tokio::time::sleep(this.interval) => continue,
                            () = this.shutdown.cancelled() => break,
                        }
                    }
                }
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
                    () = tokio::time::sleep(this.interval) => {}
                    () = this.shutdown.cancelled() => break,
                }
            }
        };
        let handle = tokio::spawn(poll.instrument(span));
        pollers.insert(job_id.to_owned(), handle);
        true
    }

    /// Claims the leases nobody holds any more (and renews this process's), then starts
    /// a poller for each job this process holds without one. Returns how many it started.
    pub(super) async fn claim_lapsed(self: &Arc<Self>) -> Result<usize, Error> {
        let held = self
            .store
            .claim_leases(&self.holder, self.lease_ttl)
            .await?;
        Ok(held.iter().filter(|id| self.spawn(id)).count())
    }

    /// Stops every poller and gives up this process's leases, so another process takes
    /// the jobs over at its next claim rather than after the TTL.
    pub(super) async fn stop(&self) {
        let pollers = std::mem::take(&mut *self.tasks.lock().expect("poller map"));
        for (_, handle) in pollers {
            handle.abort();
        }
        if let Err(e) = self.store.release_leases(&self.holder).await {
            warn!(error = %e, "cannot give up the polling leases; other processes take them over when they lapse");
        }
    }

    /// One poll: records new upstream events and checkpoints, in the order they happened,
    /// then the state change, last. Returns whether the job is finished. A write that lost
    /// a race with another writer (a cancel, another poll) is not forced: the poll starts
    /// over from what that writer stored.
    pub(super) async fn poll_once(&self, job_id: &str) -> Result<bool, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            if let Some(finished) = self.poll_attempt(job_id).await? {
                return Ok(finished);
            }
            debug!(
                job_id,
                "another writer changed the job during the poll; polling again"
            );
        }
        warn!(
            job_id,
            "the job kept changing during polls; trying at the next interval"
        );
        Ok(false)
    }

    /// One try of [`Poller::poll_once`]; `None` when another write came first.
    async fn poll_attempt(&self, job_id: &str) -> Result<Option<bool>, Error> {
        let Some(job) = self.store.get(job_id).await? else {
            return Ok(Some(true));
        };
        if job.state.is_terminal() {
            return Ok(Some(true));
        }
        let Some(upstream_id) = job.upstream_id.clone() else {
            return Ok(Some(false));
        };
        let remote = match self.provider.get_job(&upstream_id).await {
            Ok(remote) => remote,
            Err(UpstreamError::NotFound { message, .. }) => {
                let mut gone = job.clone();
                fail(&mut gone, "upstream_job_missing", &message);
                let event = state_event(
                    &gone,
                    format!("OpenAI no longer knows job {upstream_id}: {message}"),
                );
                return Ok(
                    match self.store.record(&gone, job.version, vec![event]).await? {
                        Recorded::Saved(saved, _) => {
                            self.hub.notify(&saved.id, saved.last_sequence);
                            Some(true)
                        }
                        Recorded::Finished(_) => Some(true),
                        Recorded::Conflict(_) => None,
                    },
                );
            }
            Err(e) => return Err(e.into()),
        };

        let (mut updated, events) = self.catch_up(&job, &remote).await?;
        let events = with_state_changes(&job, &mut updated, events, state_message);
        if events.is_empty() && updated == job {
            return Ok(Some(false));
        }
        let (saved, appended) = match self.store.record(&updated, job.version, events).await? {
            Recorded::Saved(saved, appended) => (saved, appended),
            Recorded::Finished(_) => return Ok(Some(true)),
            Recorded::Conflict(_) => return Ok(None),
        };
        // The store takes one terminal transition per job, so this runs once.
        if saved.state == JobState::Succeeded {
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
        Ok(Some(saved.state.is_terminal()))
    }

    /// What OpenAI reports of `job` beyond what is recorded: its new events and new
    /// checkpoints in the order they happened, and `job` updated from `remote`. The
    /// caller adds the state-change event, which is the last of a write.
    pub(super) async fn catch_up(
        &self,
        job: &Job,
        remote: &RemoteJob,
    ) -> Result<(Job, Vec<NewEvent>), Error> {
        let mut updated = job.clone();
        let Some(upstream_id) = job.upstream_id.as_deref() else {
            apply_remote(&mut updated, remote, &self.catalog);
            return Ok((updated, Vec::new()));
        };
        // Checkpoints are listed as they are made, so they are fetched while the job runs
        // (and a failed or cancelled job keeps the ones it had), not only at its end. They
        // are fetched before the events: a checkpoint is made after its step's metrics, so
        // the events listed next hold the metrics of every checkpoint listed here, and each
        // checkpoint can follow its step (fetched the other way round, a checkpoint made
        // between the two requests would come before its step's metrics).
        let mut checkpoints = if may_have_checkpoints(remote.state) {
            self.new_checkpoints(upstream_id, &job.checkpoints_seen)
                .await?
        } else {
            Vec::new()
        };
        let fresh = self
            .new_upstream_events(upstream_id, job.upstream_event_cursor.as_deref())
            .await?;
        // A checkpoint OpenAI announced among these events but made after the checkpoints
        // were listed (the job's last one, typically, made at its end) is listed again now:
        // left to the next poll, it would be recorded after everything that followed it,
        // "The job has successfully completed" included. Only the announced ones are
        // taken; any newer one waits for its step's metrics.
        let unlisted = fresh
            .iter()
            .filter_map(|e| e.announces_checkpoint)
            .filter(|step| !checkpoints.iter().any(|c| c.step == *step))
            .max();
        if let Some(upto) = unlisted {
            let seen: Vec<String> = job
                .checkpoints_seen
                .iter()
                .cloned()
                .chain(checkpoints.iter().map(|c| c.id.clone()))
                .collect();
            let later = self.new_checkpoints(upstream_id, &seen).await?;
            checkpoints.extend(later.into_iter().filter(|c| c.step <= upto));
            checkpoints.sort_by_key(|c| c.step);
        }
        if let Some(newest) = fresh.last() {
            updated.upstream_event_cursor = Some(newest.id.clone());
        }
        updated
            .checkpoints_seen
            .extend(checkpoints.iter().map(|c| c.id.clone()));
        let events = interleave(&fresh, &checkpoints);
        apply_remote(&mut updated, remote, &self.catalog);
        Ok((updated, events))
    }

    /// Checkpoints not in `seen`, oldest step first.
    async fn new_checkpoints(
        &self,
        upstream_id: &str,
        seen: &[String],
    ) -> Result<Vec<RemoteCheckpoint>, Error> {
        let mut fresh = newer_than(
            |after| async move {
                self.provider
                    .list_checkpoints(upstream_id, after.as_deref(), CHECKPOINTS_PAGE)
                    .await
            },
            |c: &RemoteCheckpoint| &c.id,
            |id| seen.iter().any(|s| s == id),
        )
        .await?;
        fresh.sort_by_key(|c| c.step);
        Ok(fresh)
    }

    /// Upstream events newer than `cursor`, oldest first.
    async fn new_upstream_events(
        &self,
        upstream_id: &str,
        cursor: Option<&str>,
    ) -> Result<Vec<RemoteEvent>, Error> {
        let mut fresh = newer_than(
            |after| async move {
                self.provider
                    .list_events(upstream_id, after.as_deref(), EVENTS_PAGE)
                    .await
            },
            |e: &RemoteEvent| &e.id,
            |id| cursor == Some(id),
        )
        .await?;
        fresh.reverse();
        Ok(fresh)
    }
}

/// The items of a provider's list newer than the first one `recorded` knows, newest first.
/// Lists come newest first and `after` (the last id of a page) pages towards older items,
/// so page until a recorded item is met or the list ends.
async fn newer_than<T, F, Fut>(
    fetch: F,
    id: impl Fn(&T) -> &String,
    recorded: impl Fn(&str) -> bool,
) -> Result<Vec<T>, Error>
where
    F: Fn(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, UpstreamError>>,
{
    let mut fresh = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = fetch(after.take()).await?;
        let last_id = page.data.last().map(|item| id(item).clone());
        for item in page.data {
            if recorded(id(&item)) {
                return Ok(fresh);
            }
            fresh.push(item);
        }
        match (page.has_more, last_id) {
            (true, Some(last)) => after = Some(last),
            _ => return Ok(fresh),
        }
    }
}

/// The events of a poll with its state changes among them, each once. A state change goes
/// before the first event that could only happen in the new state: step metrics and
/// checkpoints mean the job runs, so a watcher never sees a step while the job it knows is
/// still validating or queued. Any other change goes last. The job's status was read before
/// its events and may lag them: then the events tell the state (`updated` becomes running),
/// and the status catches up at a later poll without a second change. Nor does a lagging
/// status move the job back along OpenAI's one-way lifecycle. `message` words the last change.
pub(super) fn with_state_changes(
    job: &Job,
    updated: &mut Job,
    events: Vec<NewEvent>,
    message: impl FnOnce(&Job) -> String,
) -> Vec<NewEvent> {
    if let (Some(was), Some(now)) = (job.state.progress(), updated.state.progress()) {
        if now < was {
            updated.state = job.state;
            updated.upstream_status = job.upstream_status.clone();
        }
    }
    let first_running = events
        .iter()
        .position(|e| matches!(e.kind, EventKind::Metrics | EventKind::Checkpoint));
    let mut out = Vec::with_capacity(events.len() + 2);
    let mut known = job.clone();
    match first_running {
        Some(at) if before_running(job.state) => {
            if before_running(updated.state) {
                updated.state = JobState::Running;
                updated.upstream_status = JobState::Running.as_str().to_owned();
            }
            // What is known when it starts to run; a job also finished in this poll gets
            // its end (model, tokens, error) at its own state change.
            let running = if updated.state == JobState::Running {
                updated.clone()
            } else {
                Job {
                    state: JobState::Running,
                    upstream_status: JobState::Running.as_str().to_owned(),
                    ..job.clone()
                }
            };
            let mut events = events;
            let rest = events.split_off(at);
            out.extend(events);
            out.push(state_event(&running, state_message(&running)));
            out.extend(rest);
            known = running;
        }
        _ => out.extend(events),
    }
    if updated.state != known.state || updated.upstream_status != known.upstream_status {
        out.push(state_event(updated, message(updated)));
    }
    out
}

/// Whether the job has yet to run: validating its files or queued (or still being created).
fn before_running(state: JobState) -> bool {
    state
        .progress()
        .is_some_and(|p| Some(p) < JobState::Running.progress())
}

/// The words of a state-change event.
fn state_message(job: &Job) -> String {
    match (&job.state, &job.fine_tuned_model, &job.error) {
        (JobState::Succeeded, Some(model), _) => format!("Succeeded: {model}"),
        (JobState::Failed, _, Some(e)) => format!("Failed: {} ({})", e.message, e.code),
        (JobState::Unknown, _, _) => {
            format!("Now in OpenAI status \"{}\"", job.upstream_status)
        }
        (state, _, _) => format!("Now {}", state.as_str()),
    }
}

/// Copies the provider's view of the job into ours.
pub(super) fn apply_remote(job: &mut Job, remote: &RemoteJob, catalog: &Catalog) {
    job.upstream_status = remote.status.clone();
    job.state = remote.state;
    if !remote.model.is_empty() {
        job.model = remote.model.clone();
    }
    job.fine_tuned_model = remote.fine_tuned_model.clone();
    job.trained_tokens = remote.trained_tokens;
    // The provider's estimate means something only while the job runs.
    job.estimated_finish = remote
        .estimated_finish
        .filter(|t| *t > 0 && !job.state.is_terminal())
        .map(|t| t * 1000);
    job.finished_at = remote.finished_at.map(|t| t * 1000);
    if job.state.is_terminal() && job.finished_at.is_none() {
        job.finished_at = Some(now_millis());
    }
    job.error = remote.error.clone();
    // What the provider has settled replaces what was asked; the rest stays.
    let settled = &remote.hyperparameters;
    let ours = &mut job.hyperparameters;
    ours.n_epochs = settled.n_epochs.or(ours.n_epochs);
    ours.batch_size = settled.batch_size.or(ours.batch_size);
    ours.learning_rate_multiplier = settled
        .learning_rate_multiplier
        .or(ours.learning_rate_multiplier);
    ours.beta = settled.beta.or(ours.beta);
    if let Some(tokens) = job.trained_tokens {
        let price = catalog.resolve(&job.model).info.training_usd_per_1m;
        job.actual_cost_usd = Some(tokens as f64 * price / 1e6);
    }
}

fn event_of(e: &RemoteEvent) -> NewEvent {
    NewEvent {
        kind: e.kind,
        created_at: e.created_at * 1000,
        level: if e.level.is_empty() {
            "info".to_owned()
        } else {
            e.level.clone()
        },
        message: e.message.clone(),
        upstream_id: Some(e.id.clone()),
        metrics: e.metrics.clone(),
        checkpoint: None,
        job: None,
    }
}

/// Whether OpenAI may list checkpoints for a job in `state`: once training has begun.
fn may_have_checkpoints(state: JobState) -> bool {
    !matches!(
        state,
        JobState::Creating | JobState::ValidatingFiles | JobState::Queued
    )
}

/// Upstream events (oldest first) and new checkpoints (oldest step first) as one log:
/// each checkpoint right after the metrics of its step, or else before the first event
/// of a later step or time. OpenAI's "Checkpoint created at step N" message is left out:
/// the checkpoint event says the same with the checkpoint's id, model and metrics.
fn interleave(fresh: &[RemoteEvent], checkpoints: &[RemoteCheckpoint]) -> Vec<NewEvent> {
    let mut out = Vec::with_capacity(fresh.len() + checkpoints.len());
    let mut pending = checkpoints.iter().peekable();
    for e in fresh {
        // Steps count from 1: a metrics event without one has no place among them.
        let step = e.metrics.as_ref().map(|m| m.step).filter(|s| *s > 0);
        while let Some(c) =
            pending.next_if(|c| step.is_some_and(|s| c.step < s) || c.created_at < e.created_at)
        {
            out.push(checkpoint_event(c));
        }
        if e.announces_checkpoint.is_none() {
            out.push(event_of(e));
        }
        if let Some(s) = step {
            while let Some(c) = pending.next_if(|c| c.step <= s) {
                out.push(checkpoint_event(c));
            }
        }
    }
    out.extend(pending.map(checkpoint_event));
    out
}

fn checkpoint_event(c: &RemoteCheckpoint) -> NewEvent {
    let checkpoint = Checkpoint {
        id: c.id.clone(),
        step: c.step,
        model: c.model.clone(),
        metrics: c.metrics.clone(),
        created_at: c.created_at * 1000,
    };
    NewEvent {
        kind: EventKind::Checkpoint,
        created_at: checkpoint.created_at,
        level: "info".to_owned(),
        message: format!("Checkpoint at step {}: {}", c.step, c.model),
        upstream_id: Some(c.id.clone()),
        metrics: None,
        checkpoint: Some(checkpoint),
        job: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{Method, Metrics};

    fn job(state: JobState) -> Job {
        Job {
            state,
            upstream_status: state.as_str().to_owned(),
            upstream_id: Some("ftjob-1".to_owned()),
            ..Job::creating("gpt-4o-mini-2024-07-18".to_owned(), Method::Supervised, 0)
        }
    }

    fn event(kind: EventKind, message: &str) -> NewEvent {
        NewEvent {
            kind,
            created_at: 0,
            level: "info".to_owned(),
            message: message.to_owned(),
            upstream_id: Some(message.to_owned()),
            metrics: (kind == EventKind::Metrics).then(Metrics::default),
            checkpoint: None,
            job: None,
        }
    }

    /// The log as words: state changes as their state, other events as their message.
    fn log(events: &[NewEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match &e.job {
                Some(j) if e.kind == EventKind::StateChanged => j.state.as_str().to_uppercase(),
                _ => e.message.clone(),
            })
            .collect()
    }

    fn poll(was: JobState, status: JobState, events: Vec<NewEvent>) -> (Job, Vec<String>) {
        let mut updated = job(status);
        let out = with_state_changes(&job(was), &mut updated, events, state_message);
        (updated, log(&out))
    }

    #[test]
    fn running_goes_before_the_first_step_even_when_the_status_lags_the_events() {
        let events = vec![
            event(EventKind::Message, "Files validated"),
            event(EventKind::Message, "Fine-tuning job started"),
            event(EventKind::Metrics, "Step 1/40"),
            event(EventKind::Metrics, "Step 2/40"),
        ];
        // The status was read before the events: it still says validating_files.
        let (updated, log) = poll(JobState::ValidatingFiles, JobState::ValidatingFiles, events);
        assert_eq!(
            log,
            [
                "Files validated",
                "Fine-tuning job started",
                "RUNNING",
                "Step 1/40",
                "Step 2/40"
            ]
        );
        assert_eq!(updated.state, JobState::Running);

        // The next poll reads `running`: nothing to record twice.
        let (_, log) = poll(
            JobState::Running,
            JobState::Running,
            vec![event(EventKind::Metrics, "Step 3/40")],
        );
        assert_eq!(log, ["Step 3/40"]);
    }

    #[test]
    fn a_job_that_ran_and_ended_between_polls_gets_both_changes_in_place() {
        let events = vec![
            event(EventKind::Metrics, "Step 1/2"),
            event(EventKind::Checkpoint, "Checkpoint at step 1"),
            event(EventKind::Metrics, "Step 2/2"),
            event(EventKind::Message, "The job has successfully completed"),
        ];
        let (updated, log) = poll(JobState::Queued, JobState::Succeeded, events);
        assert_eq!(
            log,
            [
                "RUNNING",
                "Step 1/2",
                "Checkpoint at step 1",
                "Step 2/2",
                "The job has successfully completed",
                "SUCCEEDED"
            ]
        );
        assert_eq!(updated.state, JobState::Succeeded);
    }

    #[test]
    fn a_change_without_a_telling_event_goes_last_and_a_lagging_status_never_goes_back() {
        let (_, log) = poll(
            JobState::ValidatingFiles,
            JobState::Queued,
            vec![event(EventKind::Message, "Files validated")],
        );
        assert_eq!(log, ["Files validated", "QUEUED"]);

        let (updated, log) = poll(JobState::Running, JobState::Queued, Vec::new());
        assert!(log.is_empty(), "{log:?}");
        assert_eq!(updated.state, JobState::Running);

        // Off the one-way lifecycle (paused, unknown statuses) changes are taken as told.
        let (updated, log) = poll(JobState::Paused, JobState::Running, Vec::new());
        assert_eq!(log, ["RUNNING"]);
        assert_eq!(updated.state, JobState::Running);
    }
}
