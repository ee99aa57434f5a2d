//! The watch hub and WatchJob streams. The store is the source of truth: a watcher
//! reads events after its position from the store and waits on the hub only to learn
//! that there is more, so it never loses or repeats an event, whatever the number of
//! watchers and across restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use tokio_util::sync::CancellationToken;

use crate::domain::job::{Job, JobEvent, now_millis};
use crate::error::Error;
use crate::store::Store;

/// Events read from the store per query.
const READ_BATCH: u32 = 256;

/// Latest sequence per job, for waking watchers.
#[derive(Default)]
pub(super) struct Hub {
    jobs: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Hub {
    fn subscribe(&self, job_id: &str) -> watch::Receiver<u64> {
        let mut jobs = self.jobs.lock().expect("hub map");
        jobs.entry(job_id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// The jobs somebody watches now.
    pub(super) fn watched(&self) -> Vec<String> {
        let jobs = self.jobs.lock().expect("hub map");
        jobs.iter()
            .filter(|(_, tx)| tx.receiver_count() > 0)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub(super) fn notify(&self, job_id: &str, sequence: u64) {
        let jobs = self.jobs.lock().expect("hub map");
        if let Some(tx) = jobs.get(job_id) {
            // Only news wakes the watchers: the change feed repeats positions it read.
            tx.send_if_modified(|known| {
                let news = sequence > *known;
                *known = (*known).max(sequence);
                news
            });
        }
    }
}

/// One item of a WatchJob stream.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// The job as it stands, sent first.
    Snapshot(Job),
    /// The next event of the job's log, in sequence order.
    Event(JobEvent),
    /// Sent after a quiet spell, so the client knows the stream is alive.
    Heartbeat {
        /// The newest sequence number sent so far: the resume point.
        last_sequence: u64,
        /// When it was sent, in unix milliseconds.
        at: i64,
    },
}

/// The WatchJob streams of this process.
pub(super) struct Watchers {
    pub(super) store: Arc<dyn Store>,
    pub(super) hub: Arc<Hub>,
    /// A heartbeat goes out after this long without an event.
    pub(super) heartbeat: std::time::Duration,
    pub(super) shutdown: CancellationToken,
}

impl Watchers {
    /// Streams `job` from `after` (exclusive). The stream ends after the terminal
    /// state event, or with UNAVAILABLE when the server shuts down.
    pub(super) fn start(
        self: &Arc<Self>,
        job: Job,
        after: u64,
    ) -> mpsc::Receiver<Result<WatchItem, Error>> {
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.feed(job, after, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    async fn feed(
        &self,
        job: Job,
        after: u64,
        tx: &mpsc::Sender<Result<WatchItem, Error>>,
    ) -> Result<(), Error> {
        let job_id = job.id.clone();
        if tx.send(Ok(WatchItem::Snapshot(job))).await.is_err() {
            return Ok(());
        }
        let mut last = after;
        loop {
            // Subscribe before reading, so a notification between the read and the wait is not missed.
            let mut wake = self.hub.subscribe(&job_id);
            let events = self.store.events_after(&job_id, last, READ_BATCH).await?;
            if !events.is_empty() {
                for event in events {
                    last = event.sequence;
                    let terminal = event.is_terminal();
                    if tx.send(Ok(WatchItem::Event(event))).await.is_err() {
                        return Ok(());
                    }
                    if terminal {
                        return Ok(());
                    }
                }
                continue;
            }
            let current = self.store.get(&job_id).await?;
            match current {
                None => return Ok(()), // released: its creation failed
                Some(j) if j.state.is_terminal() && last >= j.last_sequence => return Ok(()),
                Some(_) => {}
            }
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(self.heartbeat) => {
                    let beat = WatchItem::Heartbeat { last_sequence: last, at: now_millis() };
                    if tx.send(Ok(beat)).await.is_err() {
                        return Ok(());
                    }
                }
                () = tx.closed() => return Ok(()),
                () = self.shutdown.cancelled() => {
                    return Err(Error::Unavailable(format!(
                        "the server is shutting down; resume with after_sequence = {last}"
                    )));
                }
            }
        }
    }
}
