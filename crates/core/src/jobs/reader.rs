//! The job history, read: GetJob, ListJobs and WatchJob of the jobs the store holds.
//!
//! A reader holds the store and the watch hub and nothing else, so a read cannot reach a
//! provider: it neither polls nor adopts, and it works on a server with no provider
//! configured. Writes (starting, polling, cancelling, adopting) are the
//! [`JobManager`](super::JobManager)'s, which wakes the watchers through the same hub.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::watch::{Hub, WatchItem, Watchers};
use crate::domain::job::{Job, JobState, is_service_job_id};
use crate::error::{Error, Missing};
use crate::store::{JobPage, Store};

/// What the store knows of a job id.
#[derive(Debug)]
pub enum Lookup {
    /// The store holds the job, under this service's id or the provider's.
    Stored(Box<Job>),
    /// The store holds no such job, and the id is not of this service's form: it may
    /// name a job made outside the service, which only adopting it
    /// ([`JobManager::adopt`](super::JobManager::adopt)) can find.
    Outside,
}

/// Reads the job history from the store; clones share the store and the hub.
#[derive(Clone)]
pub struct JobReader {
    store: Arc<dyn Store>,
    watchers: Arc<Watchers>,
}

impl JobReader {
    /// A reader of `store`. Its watch streams send a heartbeat after `heartbeat` without
    /// an event, and end with UNAVAILABLE once `shutdown` is cancelled.
    pub fn new(
        store: Arc<dyn Store>,
        heartbeat: Duration,
        shutdown: CancellationToken,
    ) -> JobReader {
        let watchers = Arc::new(Watchers {
            store: store.clone(),
            hub: Arc::new(Hub::default()),
            heartbeat,
            shutdown,
        });
        JobReader { store, watchers }
    }

    /// Wakes this reader's watchers on writes other processes make to a shared store
    /// (its change feed, and a read of the watched jobs' positions every `catch_up`),
    /// until shutdown. With a store of this process's alone there is nothing to follow.
    pub fn follow_store(&self, catch_up: Duration) -> tokio::task::JoinHandle<()> {
        super::changes::follow(
            self.store.clone(),
            self.watchers.hub.clone(),
            catch_up,
            self.watchers.shutdown.clone(),
        )
    }

    /// The hub the writers notify, so this reader's watchers learn of their writes.
    pub(super) fn hub(&self) -> &Arc<Hub> {
        &self.watchers.hub
    }

    /// Looks `id` up in the store, by this service's job id or the provider's. An id of
    /// this service's form that the store lacks is NOT_FOUND: nobody else makes those.
    pub async fn lookup(&self, id: &str) -> Result<Lookup, Error> {
        if id.is_empty() {
            return Err(Error::invalid("job_id", "required"));
        }
        if let Some(job) = self.store.get(id).await? {
            return Ok(Lookup::Stored(Box::new(job)));
        }
        if let Some(job) = self.store.get_by_upstream(id).await? {
            return Ok(Lookup::Stored(Box::new(job)));
        }
        if is_service_job_id(id) {
            return Err(not_found(id));
        }
        Ok(Lookup::Outside)
    }

    /// One page of jobs, newest first; `page_size` 0 means 20, at most 100.
    pub async fn list(
        &self,
        state: Option<JobState>,
        page_token: Option<&str>,
        page_size: u32,
    ) -> Result<JobPage, Error> {
        let size = match page_size {
            0 => 20,
            n if n > 100 => return Err(Error::invalid("page_size", "must be at most 100")),
            n => n,
        };
        self.store.list(state, page_token, size).await
    }

    /// Streams `job` from `after` (exclusive): its snapshot, then its events from the
    /// store. The stream ends after the terminal state event, or with UNAVAILABLE when
    /// the server shuts down.
    pub fn watch(&self, job: Job, after: u64) -> mpsc::Receiver<Result<WatchItem, Error>> {
        self.watchers.start(job, after)
    }

    /// How many jobs the store holds in each state (states with none are left out).
    pub async fn count_by_state(&self) -> Result<Vec<(String, u64)>, Error> {
        self.store.count_by_state().await
    }
}

/// The NOT_FOUND of a job id.
pub(super) fn not_found(id: &str) -> Error {
    Error::NotFound {
        what: format!("job {id}"),
        missing: Missing::Job(id.to_owned()),
    }
}
