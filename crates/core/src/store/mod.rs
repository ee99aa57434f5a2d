//! Persistence ports: the job store (adapters: `finetune-store-sqlite`, one process's
//! embedded file, and `finetune-store-postgres`, shared by replicas) and content-addressed
//! dataset files.

mod blobs;

pub use blobs::{DatasetStore, Expected, SharedDatasets, StoredDataset};

use std::time::Duration;

use crate::domain::job::{Job, JobEvent, JobState, NewEvent};
use crate::domain::served::{Served, TierStats};
use crate::error::Error;

/// What StartTraining's reservation of a request id found.
#[derive(Debug)]
pub enum Reservation {
    /// The job was inserted: this call owns the request id.
    Inserted,
    /// A job already holds the request id; with the fingerprint it was created with.
    Existing(Box<Job>, String),
}

/// The outcome of [`Store::record`], a compare-and-set on the job's version.
#[derive(Debug)]
pub enum Recorded {
    /// Written: the saved job (next `version`, new `last_sequence`) and the events appended.
    Saved(Job, Vec<JobEvent>),
    /// Nothing written: another write came first, so the stored job is no longer at the
    /// version the writer read. It is returned; re-apply the change to it or give up.
    Conflict(Job),
    /// Nothing written: the job has finished, and a finished job takes no further write
    /// (its terminal event stays its one terminal event, and its last). It is returned.
    Finished(Job),
}

impl Recorded {
    /// The saved job and events, for a writer that owns the job (a creation in progress),
    /// where losing the race means something else broke in.
    pub fn saved(self) -> Result<(Job, Vec<JobEvent>), Error> {
        match self {
            Recorded::Saved(job, events) => Ok((job, events)),
            Recorded::Conflict(job) | Recorded::Finished(job) => Err(Error::Io(format!(
                "job store: job {} was changed by another writer (now {}, version {})",
                job.id,
                job.state.as_str(),
                job.version
            ))),
        }
    }
}

/// Refuses a write that would break the event log's shape, whatever the adapter: a
/// terminal state event only as the last event of a write that leaves the job in that
/// state, and no job made terminal without one.
pub fn check_write(job: &Job, events: &[NewEvent]) -> Result<(), Error> {
    let refuse = |why: &str| {
        Err(Error::Io(format!(
            "job store: refused a write to job {}: {why}",
            job.id
        )))
    };
    let terminal_at: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_terminal())
        .map(|(i, _)| i)
        .collect();
    match terminal_at.as_slice() {
        [] if job.state.is_terminal() => refuse("it finishes the job without a terminal event"),
        [] => Ok(()),
        [at] if *at + 1 != events.len() => refuse("events follow the terminal event"),
        [at] if events[*at].job.as_ref().map(|j| j.state) != Some(job.state) => {
            refuse("the terminal event and the job disagree on the state")
        }
        [_] => Ok(()),
        _ => refuse("more than one terminal event"),
    }
}

/// A write to the store, as the processes that did not make it learn of it
/// ([`Store::listen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Job `job_id` now has events up to `last_sequence`.
    Job {
        /// The service's job id.
        job_id: String,
        /// The sequence of its newest event.
        last_sequence: u64,
    },
    /// Job `job_id` was released (its creation failed): it is gone from the store.
    Released {
        /// The service's job id.
        job_id: String,
    },
    /// A tier's promotion changed.
    Tiers,
    /// Changes may have been missed (the listening connection was lost and restored):
    /// whoever relies on them reads the store again.
    Lagged,
}

/// A page of jobs, newest first.
#[derive(Debug)]
pub struct JobPage {
    /// The jobs of this page, newest first.
    pub jobs: Vec<Job>,
    /// Cursor of the next page, when there is one.
    pub next: Option<String>,
}

impl JobPage {
    /// Where the page a cursor names starts: after the job created at `.0` with id `.1`
    /// (jobs are ordered by creation time, then id, newest first); `None` for the first
    /// page. Every adapter issues the same tokens (`created_at:id`), so a token reads alike
    /// whichever database a replica uses.
    pub fn position(cursor: Option<&str>) -> Result<Option<(i64, String)>, Error> {
        cursor
            .map(|c| {
                c.split_once(':')
                    .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_owned())))
                    .ok_or_else(|| Error::invalid("page_token", "not a token this service issued"))
            })
            .transpose()
    }

    /// The page of `limit` jobs from `jobs`, read with one more than `limit` so that a
    /// next page is known to exist exactly when that extra job came back.
    pub fn of(mut jobs: Vec<Job>, limit: u32) -> JobPage {
        let next = if jobs.len() > limit as usize {
            jobs.truncate(limit as usize);
            jobs.last().map(|j| format!("{}:{}", j.created_at, j.id))
        } else {
            None
        };
        JobPage { jobs, next }
    }
}

/// The job store. Every write that adds events also updates the job snapshot in the
/// same transaction, so `last_sequence` and the log never disagree.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new job unless its request id is taken.
    async fn reserve(&self, job: &Job, fingerprint: &str) -> Result<Reservation, Error>;
    /// Inserts an adopted job (no request id); returns the stored one if the upstream id exists.
    async fn adopt(&self, job: &Job) -> Result<Job, Error>;
    /// Removes a reservation whose upstream creation failed, with its events.
    async fn release(&self, job_id: &str) -> Result<(), Error>;
    /// The job `id`, or None when the store does not know it.
    async fn get(&self, id: &str) -> Result<Option<Job>, Error>;
    /// The job reserved under `request_id`, with the fingerprint of the request that reserved it.
    async fn get_by_request(&self, request_id: &str) -> Result<Option<(Job, String)>, Error>;
    /// The job linked to the provider's job `upstream_id`, if any.
    async fn get_by_upstream(&self, upstream_id: &str) -> Result<Option<Job>, Error>;
    /// Jobs newest first; `cursor` is a previous page's `next`.
    async fn list(
        &self,
        state: Option<JobState>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<JobPage, Error>;
    /// Jobs not in a terminal state (to resume polling after a restart).
    async fn unfinished(&self) -> Result<Vec<Job>, Error>;
    /// Reservations not yet linked to an upstream job (and not finished), oldest first.
    async fn creating(&self) -> Result<Vec<Job>, Error>;
    /// The number of jobs in each state that has any ([`JobState::as_str`] names).
    async fn count_by_state(&self) -> Result<Vec<(String, u64)>, Error>;
    /// Saves `job` and appends `events` with the next sequence numbers, atomically, if the
    /// stored job is still at `read_version` (the `version` of the job the writer read)
    /// and not finished; otherwise writes nothing and says why ([`Recorded`]). The
    /// compare-and-set is one conditional `UPDATE ... WHERE id = ? AND version = ? AND
    /// state NOT IN (terminal states)`. Events whose upstream id is already recorded are
    /// skipped. A write that [`check_write`] refuses is an error.
    async fn record(
        &self,
        job: &Job,
        read_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Recorded, Error>;
    /// Events with a sequence above `after`, oldest first, at most `limit`.
    async fn events_after(
        &self,
        job_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JobEvent>, Error>;
    /// The upstream file id of a dataset already uploaded, by SHA-256 of the uploaded bytes.
    async fn uploaded_file(&self, sha256: &str) -> Result<Option<String>, Error>;
    /// Remembers that the bytes with `sha256` were uploaded as the provider's `file_id`.
    async fn remember_upload(&self, sha256: &str, file_id: &str) -> Result<(), Error>;

    /// Promotes `model` to `tier` (persisted across restarts).
    async fn set_tier_model(
        &self,
        tier: &str,
        model: &str,
        job_id: Option<&str>,
    ) -> Result<(), Error>;
    /// Every promotion: (tier, model, job id).
    async fn tier_models(&self) -> Result<Vec<(String, String, Option<String>)>, Error>;
    /// Records served requests, in one transaction.
    async fn record_served(&self, served: &[Served]) -> Result<(), Error>;
    /// Rates a served response (1 up, -1 down); returns its (tier, split), or None if unknown.
    async fn rate(&self, response_id: &str, rating: i64)
    -> Result<Option<(String, String)>, Error>;
    /// Statistics per (tier, split), optionally for one tier or split only.
    async fn tier_stats(&self, tier: Option<&str>) -> Result<Vec<TierStats>, Error>;

    /// Whether other processes may write to this store too (a database replicas share),
    /// so that what this process holds in memory (promotions, say) can be stale.
    fn is_shared(&self) -> bool;

    /// Answers when the database does (readiness): one round trip.
    async fn ping(&self) -> Result<(), Error>;

    /// The writes other processes make from now on, when the store is shared by several
    /// (PostgreSQL's LISTEN/NOTIFY); `None` when it is this process's alone (SQLite), whose
    /// own writers already tell the watchers in process. Delivery is best effort: a
    /// listener also reads [`Store::last_sequences`] now and then, so a lost notice only
    /// delays an event.
    async fn listen(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Change>>, Error>;

    /// The `last_sequence` of each of `job_ids` the store holds (a released job is absent),
    /// in one query.
    async fn last_sequences(&self, job_ids: &[String]) -> Result<Vec<(String, u64)>, Error>;

    /// Polling leases: a process polls a job only while it holds the job's lease, so each
    /// active job has one poller however many processes share the store. A lease is a row
    /// (job, holder, expiry on the database's clock); it lapses `ttl` after it was last
    /// renewed.
    ///
    /// Atomically (one statement where the engine allows): drops the leases of finished
    /// jobs, renews every lease `holder` holds (a job being created included: its
    /// creator holds it), takes the lease of every unfinished job linked upstream that
    /// has none or whose lease lapsed, and returns the ids of the jobs whose lease
    /// `holder` holds afterwards.
    async fn claim_leases(&self, holder: &str, ttl: Duration) -> Result<Vec<String>, Error>;

    /// Takes or renews the lease of one job when it is free, lapsed or already `holder`'s;
    /// whether `holder` holds it afterwards.
    async fn claim_lease(&self, job_id: &str, holder: &str, ttl: Duration) -> Result<bool, Error>;

    /// Gives up every lease `holder` holds (at shutdown), so that another process takes
    /// them over at its next claim instead of after the TTL.
    async fn release_leases(&self, holder: &str) -> Result<(), Error>;
}
