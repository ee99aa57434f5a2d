//! Persistence ports: the job store (SQLite by default) and content-addressed dataset files.

mod blobs;
mod sqlite;

pub use blobs::{DatasetStore, Expected, StoredDataset};
pub use sqlite::SqliteStore;

use crate::error::Error;
use crate::jobs::model::{Job, JobEvent, JobState, NewEvent};
use crate::serving::record::{Served, TierStats};

/// What StartTraining's reservation of a request id found.
#[derive(Debug)]
pub enum Reservation {
    /// The job was inserted: this call owns the request id.
    Inserted,
    /// A job already holds the request id; with the fingerprint it was created with.
    Existing(Box<Job>, String),
}

/// A page of jobs, newest first.
#[derive(Debug)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Cursor of the next page, when there is one.
    pub next: Option<String>,
}

/// The job store. Every write that adds events also updates the job snapshot in the
/// same transaction, so `last_sequence` and the log never disagree.
#[tonic::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new job unless its request id is taken.
    async fn reserve(&self, job: &Job, fingerprint: &str) -> Result<Reservation, Error>;
    /// Inserts an adopted job (no request id); returns the stored one if the upstream id exists.
    async fn adopt(&self, job: &Job) -> Result<Job, Error>;
    /// Removes a reservation whose upstream creation failed, with its events.
    async fn release(&self, job_id: &str) -> Result<(), Error>;
    async fn get(&self, id: &str) -> Result<Option<Job>, Error>;
    async fn get_by_request(&self, request_id: &str) -> Result<Option<(Job, String)>, Error>;
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
    /// Saves `job` and appends `events` with the next sequence numbers, atomically.
    /// Events whose upstream id is already recorded are skipped. Returns the appended
    /// events and the saved job (with its new `last_sequence`).
    async fn record(&self, job: &Job, events: Vec<NewEvent>)
    -> Result<(Job, Vec<JobEvent>), Error>;
    /// Events with a sequence above `after`, oldest first, at most `limit`.
    async fn events_after(
        &self,
        job_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JobEvent>, Error>;
    /// The upstream file id of a dataset already uploaded, by SHA-256 of the uploaded bytes.
    async fn uploaded_file(&self, sha256: &str) -> Result<Option<String>, Error>;
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
}
