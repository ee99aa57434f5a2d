//! The watch hub and WatchJob streams. The store is the source of truth; the hub keeps,
//! per watched job, a tail of its most recent events read from the store, and serves the
//! job's watchers from it.
//!
//! A notification (`Hub::notify`) only says that the job's log reaches some sequence. The
//! first watcher to see it reads the new events from the store into the tail, once for all
//! (the others find the read in progress and wait for it); then every watcher sends what
//! the tail holds past its position. A watcher further back than the tail reaches (a
//! resume from an old sequence, a slow client) reads from the store until it is within the
//! tail. So store reads grow with batches of events and not with watchers, and a watcher
//! never loses or repeats an event, however many there are and across restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::job::{Job, JobEvent, now_millis};
use crate::error::Error;
use crate::store::Store;

/// Events read from the store per query.
const READ_BATCH: u32 = 256;

/// Events a job's tail keeps. One read batch: a fill never evicts what it has just read, so
/// a watcher that was current before a batch is served the whole batch from memory. It
/// also holds the whole log of a young job, so watchers that start from its beginning are
/// served from memory too. An event is a few hundred bytes (a state change carries a job
/// snapshot, under 1 KiB), so a full tail is at most about 256 KiB per watched job.
const TAIL_LEN: usize = READ_BATCH as usize;

/// The watched jobs' tails. Writers (and, for other processes' writes, whoever learns of
/// them) call [`Hub::notify`]; a job's tail lives while someone watches the job.
#[derive(Default)]
pub(super) struct Hub {
    jobs: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    tail: Arc<Tail>,
    /// Live [`Subscription`]s: the entry goes with the last.
    watchers: usize,
}

impl Hub {
    fn subscribe(self: &Arc<Self>, job_id: &str) -> Subscription {
        let mut jobs = self.jobs.lock().expect("hub map");
        let entry = jobs.entry(job_id.to_owned()).or_insert_with(|| Entry {
            tail: Arc::new(Tail::default()),
            watchers: 0,
        });
        entry.watchers += 1;
        Subscription {
            hub: self.clone(),
            job_id: job_id.to_owned(),
            tail: entry.tail.clone(),
        }
    }

    /// Says that the log of `job_id` reaches `sequence`; `u64::MAX` says the job was
    /// released (its creation failed). Any process's writes may be announced, late, twice
    /// or out of order: a sequence the tail already holds is ignored, and the events are
    /// always read from the store. A job nobody watches is ignored.
    pub(super) fn notify(&self, job_id: &str, sequence: u64) {
        let tail = match self.jobs.lock().expect("hub map").get(job_id) {
            Some(entry) => entry.tail.clone(),
            None => return,
        };
        tail.notify(sequence);
    }

    /// The jobs somebody watches now.
    pub(super) fn watched(&self) -> Vec<String> {
        self.jobs.lock().expect("hub map").keys().cloned().collect()
    }

    #[cfg(test)]
    fn watched_jobs(&self) -> usize {
        self.jobs.lock().expect("hub map").len()
    }
}

/// A watcher's hold on its job's tail; dropping the last one drops the tail.
struct Subscription {
    hub: Arc<Hub>,
    job_id: String,
    tail: Arc<Tail>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut jobs = self.hub.jobs.lock().expect("hub map");
        // The entry is this subscription's: it is removed only when its count reaches 0.
        if let Some(entry) = jobs.get_mut(&self.job_id) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                jobs.remove(&self.job_id);
            }
        }
    }
}

/// One job's recent events and what is known of the rest of its log.
#[derive(Default)]
struct Tail {
    buffer: Mutex<Buffer>,
    /// Held by the one watcher reading new events from the store for everyone.
    fill: tokio::sync::Mutex<()>,
    /// Changed when a notification asks for a fill and after every fill.
    changed: watch::Sender<()>,
}

#[derive(Default)]
struct Buffer {
    /// Whether the tail has been read from the store once.
    primed: bool,
    /// Every event with a sequence in (`from`, `end`], in order.
    events: VecDeque<JobEvent>,
    from: u64,
    end: u64,
    /// The highest sequence notified.
    wanted: u64,
    /// Notifications above `end` so far, and how many of them the last fill covered.
    notified: u64,
    filled: u64,
    /// The last fill read a full batch: there may be more.
    more: bool,
    /// Releases notified, and how many of them a fill has checked (asking the store
    /// whether the job is gone).
    releases: u64,
    releases_checked: u64,
    /// The terminal event is `end`: nothing follows.
    finished: bool,
    /// The job was released: its log is gone.
    released: bool,
}

impl Buffer {
    fn needs_fill(&self) -> bool {
        !self.primed
            || self.notified != self.filled
            || self.more
            || self.releases != self.releases_checked
    }
}

/// What a watcher at some position does next.
enum Serve {
    /// Send these events, the tail's past the position.
    Events(Vec<JobEvent>),
    /// The position is before the tail: read from the store.
    Behind,
    /// The tail needs reading from the store.
    Fill,
    /// Nothing new: wait for a change.
    Wait,
    /// The job has ended (and the position is its end), or was released.
    End,
}

/// What a fill read from the store.
enum Fetched {
    Released,
    Events {
        /// Where the events start, for the first fill.
        after: u64,
        events: Vec<JobEvent>,
        full: bool,
    },
}

impl Tail {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().expect("watch tail")
    }

    fn notify(&self, sequence: u64) {
        let mut b = self.lock();
        if b.released || b.finished {
            return;
        }
        let pending = b.needs_fill();
        if sequence == u64::MAX {
            b.releases += 1;
        } else if sequence > b.end || !b.primed {
            b.wanted = b.wanted.max(sequence);
            b.notified += 1;
        } else {
            return; // already held
        }
        drop(b);
        // With a fill already pending, every watcher has seen it and either fills or waits
        // for the filler's change.
        if !pending {
            self.changed.send_replace(());
        }
    }

    fn serve(&self, last: u64) -> Serve {
        let b = self.lock();
        if b.released {
            return Serve::End;
        }
        if !b.primed {
            return Serve::Fill;
        }
        if last < b.from {
            return Serve::Behind;
        }
        if last < b.end {
            let next = b.events.partition_point(|e| e.sequence <= last);
            return Serve::Events(b.events.range(next..).cloned().collect());
        }
        if b.finished {
            return Serve::End;
        }
        if b.needs_fill() {
            return Serve::Fill;
        }
        Serve::Wait
    }

    /// Reads what the tail lacks from the store, for every watcher of the job. `guard` is
    /// the fill lock; it is released before the watchers are told, so that a watcher that
    /// found it taken is sure to hear of this fill.
    async fn fill(
        &self,
        job_id: &str,
        store: &dyn Store,
        guard: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), Error> {
        let read = self.read(job_id, store).await;
        drop(guard);
        self.changed.send_replace(());
        read
    }

    async fn read(&self, job_id: &str, store: &dyn Store) -> Result<(), Error> {
        let (generation, releases, verify, primed, end) = {
            let b = self.lock();
            if !b.needs_fill() {
                return Ok(()); // another watcher filled it since this one looked
            }
            let verify = b.releases != b.releases_checked;
            (b.notified, b.releases, verify, b.primed, b.end)
        };
        let fetched = if primed {
            let events = store.events_after(job_id, end, READ_BATCH).await?;
            if verify && store.get(job_id).await?.is_none() {
                Fetched::Released
            } else {
                Fetched::Events {
                    after: end,
                    full: events.len() == READ_BATCH as usize,
                    events,
                }
            }
        } else {
            // The entry was made before this read, so a write this read misses is notified.
            match store.get(job_id).await? {
                None => Fetched::Released,
                Some(job) => {
                    let after = job.last_sequence.saturating_sub(TAIL_LEN as u64);
                    let events = store.events_after(job_id, after, READ_BATCH).await?;
                    Fetched::Events {
                        after,
                        full: events.len() == READ_BATCH as usize,
                        events,
                    }
                }
            }
        };
        let mut b = self.lock();
        b.filled = generation;
        b.releases_checked = releases;
        match fetched {
            Fetched::Released => b.released = true,
            Fetched::Events {
                after,
                events,
                full,
            } => {
                if !b.primed {
                    b.primed = true;
                    b.from = after;
                    b.end = after;
                }
                for event in events {
                    // Only this fill writes the buffer, from `end`: the events follow it.
                    b.end = event.sequence;
                    b.finished = event.is_terminal();
                    b.events.push_back(event);
                }
                while b.events.len() > TAIL_LEN {
                    if let Some(old) = b.events.pop_front() {
                        b.from = old.sequence;
                    }
                }
                b.more = full && !b.finished;
                if b.wanted <= b.end {
                    b.filled = b.notified; // every notification so far is covered
                }
            }
        }
        Ok(())
    }
}

/// One item of a WatchJob stream. Job and event are boxed: each stream's channel holds
/// its items in blocks of 32 slots the size of the largest variant, and with 10,000
/// streams an unboxed job (616 bytes) cost about 20 KiB per block per stream.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// The job as it stands, sent first.
    Snapshot(Box<Job>),
    /// The next event of the job's log, in sequence order.
    Event(Box<JobEvent>),
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
        // Subscribe before reading, so that a notification from now on is not missed.
        let subscription = self.hub.subscribe(&job_id);
        let tail = &subscription.tail;
        let mut changed = tail.changed.subscribe();
        let snapshot = WatchItem::Snapshot(Box::new(job));
        if tx.send(Ok(snapshot)).await.is_err() {
            return Ok(());
        }
        let mut last = after;
        let mut quiet_until = Instant::now() + self.heartbeat;
        loop {
            // Marked seen before looking, so a change made after the look wakes the wait.
            changed.mark_unchanged();
            let events = match tail.serve(last) {
                Serve::End => return Ok(()),
                Serve::Events(events) => events,
                Serve::Behind => {
                    let events = self.store.events_after(&job_id, last, READ_BATCH).await?;
                    if events.is_empty() {
                        return self.gone(&job_id, last).await;
                    }
                    events
                }
                Serve::Fill => match tail.fill.try_lock() {
                    Ok(guard) => {
                        tail.fill(&job_id, &*self.store, guard).await?;
                        continue;
                    }
                    // Another watcher is reading: its change wakes this one.
                    Err(_) => Vec::new(),
                },
                Serve::Wait => Vec::new(),
            };
            if !events.is_empty() {
                for event in events {
                    last = event.sequence;
                    let terminal = event.is_terminal();
                    let item = WatchItem::Event(Box::new(event));
                    if tx.send(Ok(item)).await.is_err() {
                        return Ok(());
                    }
                    if terminal {
                        return Ok(());
                    }
                }
                quiet_until = Instant::now() + self.heartbeat;
                continue;
            }
            tokio::select! {
                _ = changed.changed() => {}
                () = tokio::time::sleep_until(quiet_until) => {
                    let beat = WatchItem::Heartbeat { last_sequence: last, at: now_millis() };
                    if tx.send(Ok(beat)).await.is_err() {
                        return Ok(());
                    }
                    quiet_until = Instant::now() + self.heartbeat;
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

    /// The store has no events after `last`, though the tail starts later: the job was
    /// released since (its log went with it), or the log is broken.
    async fn gone(&self, job_id: &str, last: u64) -> Result<(), Error> {
        match self.store.get(job_id).await? {
            None => Ok(()),
            Some(_) => Err(Error::Io(format!(
                "job store: job {job_id} has no events after sequence {last}, though later ones were read"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::domain::job::{EventKind, JobState, Method, NewEvent};
    use crate::domain::served::{Served, TierStats};
    use crate::store::{Change, JobPage, Recorded, Reservation};

    /// A job store in memory that counts the reads a watch makes. Each read yields once,
    /// as a real store's query would, so other watchers run while it is in flight.
    #[derive(Default)]
    struct Counted {
        jobs: Mutex<HashMap<String, (Job, Vec<JobEvent>)>>,
        events_after: AtomicU64,
        gets: AtomicU64,
        /// The `after` of every `events_after`, in call order.
        afters: Mutex<Vec<u64>>,
    }

    fn unused() -> Error {
        Error::Io("not used by the watch tests".to_owned())
    }

    impl Counted {
        fn reads(&self) -> u64 {
            self.events_after.load(Ordering::SeqCst) + self.gets.load(Ordering::SeqCst)
        }

        fn insert(&self) -> Job {
            let job = Job::creating("gpt-4o-mini".to_owned(), Method::Supervised, 0);
            let mut jobs = self.jobs.lock().unwrap();
            jobs.insert(job.id.clone(), (job.clone(), Vec::new()));
            job
        }

        /// Appends `n` message events; the job's last sequence after them.
        fn append(&self, job_id: &str, n: u64) -> u64 {
            self.write(job_id, n, None)
        }

        /// Appends the terminal state change; its sequence.
        fn finish(&self, job_id: &str) -> u64 {
            self.write(job_id, 1, Some(JobState::Succeeded))
        }

        fn write(&self, job_id: &str, n: u64, state: Option<JobState>) -> u64 {
            let mut jobs = self.jobs.lock().unwrap();
            let (job, events) = jobs.get_mut(job_id).expect("a job of the test");
            for _ in 0..n {
                job.last_sequence += 1;
                if let Some(state) = state {
                    job.state = state;
                }
                let snapshot = state.map(|_| Box::new(job.clone()));
                events.push(JobEvent {
                    job_id: job_id.to_owned(),
                    sequence: job.last_sequence,
                    event: NewEvent {
                        kind: if state.is_some() {
                            EventKind::StateChanged
                        } else {
                            EventKind::Message
                        },
                        created_at: 0,
                        level: "info".to_owned(),
                        message: format!("event {}", job.last_sequence),
                        upstream_id: None,
                        metrics: None,
                        checkpoint: None,
                        job: snapshot,
                    },
                });
            }
            job.last_sequence
        }
    }

    #[async_trait::async_trait]
    impl Store for Counted {
        async fn reserve(&self, _: &Job, _: &str) -> Result<Reservation, Error> {
            Err(unused())
        }
        async fn adopt(&self, _: &Job) -> Result<Job, Error> {
            Err(unused())
        }
        async fn release(&self, job_id: &str) -> Result<(), Error> {
            self.jobs.lock().unwrap().remove(job_id);
            Ok(())
        }
        async fn get(&self, id: &str) -> Result<Option<Job>, Error> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(self.jobs.lock().unwrap().get(id).map(|(j, _)| j.clone()))
        }
        async fn get_by_request(&self, _: &str) -> Result<Option<(Job, String)>, Error> {
            Err(unused())
        }
        async fn get_by_upstream(&self, _: &str) -> Result<Option<Job>, Error> {
            Err(unused())
        }
        async fn list(
            &self,
            _: Option<JobState>,
            _: Option<&str>,
            _: u32,
        ) -> Result<JobPage, Error> {
            Err(unused())
        }
        async fn unfinished(&self) -> Result<Vec<Job>, Error> {
            Err(unused())
        }
        async fn creating(&self) -> Result<Vec<Job>, Error> {
            Err(unused())
        }
        async fn count_by_state(&self) -> Result<Vec<(String, u64)>, Error> {
            Err(unused())
        }
        async fn record(&self, _: &Job, _: u64, _: Vec<NewEvent>) -> Result<Recorded, Error> {
            Err(unused())
        }
        async fn events_after(
            &self,
            job_id: &str,
            after: u64,
            limit: u32,
        ) -> Result<Vec<JobEvent>, Error> {
            self.events_after.fetch_add(1, Ordering::SeqCst);
            self.afters.lock().unwrap().push(after);
            tokio::task::yield_now().await;
            let jobs = self.jobs.lock().unwrap();
            Ok(jobs.get(job_id).map_or_else(Vec::new, |(_, events)| {
                events
                    .iter()
                    .filter(|e| e.sequence > after)
                    .take(limit as usize)
                    .cloned()
                    .collect()
            }))
        }
        async fn uploaded_file(&self, _: &str) -> Result<Option<String>, Error> {
            Err(unused())
        }
        async fn remember_upload(&self, _: &str, _: &str) -> Result<(), Error> {
            Err(unused())
        }
        async fn set_tier_model(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), Error> {
            Err(unused())
        }
        async fn tier_models(&self) -> Result<Vec<(String, String, Option<String>)>, Error> {
            Err(unused())
        }
        async fn record_served(&self, _: &[Served]) -> Result<(), Error> {
            Err(unused())
        }
        async fn rate(&self, _: &str, _: i64) -> Result<Option<(String, String)>, Error> {
            Err(unused())
        }
        async fn tier_stats(&self, _: Option<&str>) -> Result<Vec<TierStats>, Error> {
            Err(unused())
        }
        fn is_shared(&self) -> bool {
            false
        }
        async fn ping(&self) -> Result<(), Error> {
            Ok(())
        }
        async fn listen(&self) -> Result<Option<mpsc::Receiver<Change>>, Error> {
            Ok(None)
        }
        async fn last_sequences(&self, _: &[String]) -> Result<Vec<(String, u64)>, Error> {
            Err(unused())
        }
        async fn claim_leases(&self, _: &str, _: Duration) -> Result<Vec<String>, Error> {
            Err(unused())
        }
        async fn claim_lease(&self, _: &str, _: &str, _: Duration) -> Result<bool, Error> {
            Err(unused())
        }
        async fn release_leases(&self, _: &str) -> Result<(), Error> {
            Err(unused())
        }
    }

    type Stream = mpsc::Receiver<Result<WatchItem, Error>>;

    /// Watchers over `store` whose heartbeats never come in a test's time.
    fn watchers(store: &Arc<Counted>) -> Arc<Watchers> {
        Arc::new(Watchers {
            store: store.clone(),
            hub: Arc::new(Hub::default()),
            heartbeat: Duration::from_secs(3600),
            shutdown: CancellationToken::new(),
        })
    }

    fn watch(w: &Arc<Watchers>, job: &Job, after: u64) -> Stream {
        w.start(job.clone(), after)
    }

    async fn snapshot(rx: &mut Stream) {
        match rx.recv().await {
            Some(Ok(WatchItem::Snapshot(_))) => {}
            other => panic!("not a snapshot first: {other:?}"),
        }
    }

    /// The sequences a stream sends up to `until`, in the order sent.
    async fn events_until(rx: &mut Stream, until: u64) -> Vec<u64> {
        let mut got = Vec::new();
        while got.last().is_none_or(|s| *s < until) {
            match rx.recv().await {
                Some(Ok(WatchItem::Event(e))) => got.push(e.sequence),
                other => panic!("after {got:?}, not an event: {other:?}"),
            }
        }
        got
    }

    async fn ended(rx: &mut Stream) {
        if let Some(item) = rx.recv().await {
            panic!("the stream goes on: {item:?}");
        }
    }

    /// Lets the spawned watchers run until `done` holds (they only need the scheduler).
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the watchers did not settle");
    }

    /// Whether the job's tail waits for a read from the store.
    fn fill_pending(w: &Watchers, job_id: &str) -> bool {
        let jobs = w.hub.jobs.lock().unwrap();
        jobs.get(job_id).is_some_and(|e| e.tail.lock().needs_fill())
    }

    /// A job with `events` events and `count` watchers from the start that have read them.
    async fn watched(events: u64, count: usize) -> (Arc<Counted>, Arc<Watchers>, Job, Vec<Stream>) {
        let store = Arc::new(Counted::default());
        let w = watchers(&store);
        let job = store.insert();
        store.append(&job.id, events);
        let mut streams: Vec<Stream> = (0..count).map(|_| watch(&w, &job, 0)).collect();
        let all: Vec<u64> = (1..=events).collect();
        for rx in &mut streams {
            snapshot(rx).await;
            assert_eq!(events_until(rx, events).await, all);
        }
        (store, w, job, streams)
    }

    #[tokio::test]
    async fn a_thousand_watchers_cost_store_reads_per_batch_not_per_watcher() {
        let (store, w, job, mut streams) = watched(3, 1000).await;
        let mut last = 3;
        // The tail's first fill: the job, then its events.
        let initial = store.reads();
        assert!(initial <= 3, "{initial} reads to start 1,000 watchers");

        let batches = 20;
        for batch in 0..batches {
            let first = last + 1;
            last = if batch + 1 == batches {
                store.append(&job.id, 4);
                store.finish(&job.id)
            } else {
                store.append(&job.id, 5)
            };
            w.hub.notify(&job.id, last);
            for rx in &mut streams {
                let want: Vec<u64> = (first..=last).collect();
                assert_eq!(events_until(rx, last).await, want);
            }
        }
        for rx in &mut streams {
            ended(rx).await;
        }
        let reads = store.reads() - initial;
        assert!(
            reads <= 2 * batches,
            "{reads} store reads for {batches} batches to 1,000 watchers"
        );
        settle(|| w.hub.watched_jobs() == 0).await;
    }

    #[tokio::test]
    async fn a_watcher_from_before_the_tail_reads_the_store_then_joins_the_tail() {
        let store = Arc::new(Counted::default());
        let w = watchers(&store);
        let job = store.insert();
        let total = 600; // more than the tail keeps
        store.append(&job.id, total);
        let mut current = watch(&w, &job, total);
        snapshot(&mut current).await;
        settle(|| store.reads() > 0 && !fill_pending(&w, &job.id)).await;
        let tail_from = total - TAIL_LEN as u64;

        let mut resumed = watch(&w, &job, 10);
        snapshot(&mut resumed).await;
        let old: Vec<u64> = (11..=total).collect();
        assert_eq!(events_until(&mut resumed, total).await, old);
        // From the store only what the tail lacks, each read where the last one ended.
        let from_store: Vec<u64> = store
            .afters
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|a| *a < tail_from)
            .collect();
        assert_eq!(from_store, [10, 10 + u64::from(READ_BATCH)]);

        let last = store.append(&job.id, 5);
        w.hub.notify(&job.id, last);
        let new: Vec<u64> = (total + 1..=last).collect();
        assert_eq!(events_until(&mut resumed, last).await, new);
        assert_eq!(events_until(&mut current, last).await, new);
    }

    #[tokio::test]
    async fn late_repeated_and_early_notifications_lose_nothing_and_repeat_nothing() {
        let (store, w, job, mut streams) = watched(3, 10).await;
        // Sequences the tail holds: no read.
        let reads = store.reads();
        w.hub.notify(&job.id, 2);
        w.hub.notify(&job.id, 3);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.reads(), reads);

        // Announced before this process can read it (another process's write): a read
        // that finds nothing, then the events are read when announced again.
        w.hub.notify(&job.id, 5);
        settle(|| store.reads() > reads && !fill_pending(&w, &job.id)).await;
        store.append(&job.id, 2);
        w.hub.notify(&job.id, 4);
        w.hub.notify(&job.id, 5);
        for rx in &mut streams {
            assert_eq!(events_until(rx, 5).await, [4, 5]);
        }
        let last = store.finish(&job.id);
        w.hub.notify(&job.id, last);
        w.hub.notify(&job.id, last);
        for rx in &mut streams {
            assert_eq!(events_until(rx, last).await, [last]);
            ended(rx).await;
        }
    }

    #[tokio::test]
    async fn a_released_job_ends_its_watchers() {
        let (store, w, job, mut streams) = watched(2, 10).await;
        // A release announced while the store still holds the job (the release failed):
        // the watchers go on.
        let reads = store.reads();
        w.hub.notify(&job.id, u64::MAX);
        settle(|| store.reads() > reads && !fill_pending(&w, &job.id)).await;
        let last = store.append(&job.id, 1);
        w.hub.notify(&job.id, last);
        for rx in &mut streams {
            assert_eq!(events_until(rx, last).await, [last]);
        }

        store.release(&job.id).await.unwrap();
        w.hub.notify(&job.id, u64::MAX);
        for rx in &mut streams {
            ended(rx).await;
        }
        settle(|| w.hub.watched_jobs() == 0).await;
    }

    #[tokio::test]
    async fn an_unwatched_job_drops_its_tail_and_can_be_watched_again() {
        let (store, w, job, streams) = watched(2, 5).await;
        assert_eq!(w.hub.watched_jobs(), 1);
        drop(streams); // the clients leave
        settle(|| w.hub.watched_jobs() == 0).await;

        // Written while nobody watches: the notification finds no tail.
        let last = store.append(&job.id, 3);
        w.hub.notify(&job.id, last);
        assert_eq!(w.hub.watched_jobs(), 0);

        let mut again = watch(&w, &job, 1);
        snapshot(&mut again).await;
        assert_eq!(events_until(&mut again, last).await, [2, 3, 4, 5]);
        let last = store.finish(&job.id);
        w.hub.notify(&job.id, last);
        assert_eq!(events_until(&mut again, last).await, [last]);
        ended(&mut again).await;
    }

    #[tokio::test]
    async fn shutdown_ends_a_stream_with_its_resume_point() {
        let store = Arc::new(Counted::default());
        let w = watchers(&store);
        let job = store.insert();
        store.append(&job.id, 3);
        let mut rx = watch(&w, &job, 1);
        snapshot(&mut rx).await;
        assert_eq!(events_until(&mut rx, 3).await, [2, 3]);
        w.shutdown.cancel();
        match rx.recv().await {
            Some(Err(Error::Unavailable(m))) => {
                assert!(m.contains("after_sequence = 3"), "{m}");
            }
            other => panic!("not UNAVAILABLE: {other:?}"),
        }
    }
}
