//! The Store conformance suite: every behaviour of the `Store` port, written once against
//! `&dyn Store` and run on each adapter, SQLite (a fresh file) and PostgreSQL (a fresh
//! database on the server scripts/postgres.sh starts; without one these tests fail, saying
//! how to start it). `Db::open` opens another instance on the same database: another pool,
//! as another process (a replica) would have.

use std::sync::Arc;
use std::time::Duration;

use finetune_core::domain::job::{
    EventKind, Job, JobEvent, JobState, Method, NewEvent, now_millis,
};
use finetune_core::domain::served::{Served, TierStats};
use finetune_core::store::{Change, Recorded, Reservation, Store};
use finetune_store_postgres::{Migrated, PgStore, PoolSettings};
use finetune_store_sqlite::SqliteStore;
use sqlx::Connection;

use crate::common::postgres::TestDatabase;

/// One database of one adapter, for one test.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Db {
    async fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres() -> Db {
        Db::Postgres(TestDatabase::create().await)
    }

    /// A new store instance on this database (its own connections).
    async fn open(&self) -> Arc<dyn Store> {
        self.try_open().await.unwrap()
    }

    async fn try_open(&self) -> Result<Arc<dyn Store>, finetune_core::Error> {
        Ok(match self {
            Db::Sqlite(dir) => Arc::new(SqliteStore::open(&dir.path().join("jobs.db")).await?),
            Db::Postgres(db) => Arc::new(PgStore::connect(&db.url, PoolSettings::default()).await?),
        })
    }

    /// Marks the schema as migrated by a newer build, as a later release would leave it.
    async fn age_schema(&self, version: i64) {
        let insert = |checksum: &str| {
            sqlx::AssertSqlSafe(format!(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES ({version}, 'from a newer build', TRUE, {checksum}, 0)"
            ))
        };
        match self {
            Db::Sqlite(dir) => {
                let url = format!("sqlite:{}", dir.path().join("jobs.db").display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query(insert("X'00'"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
            }
            Db::Postgres(db) => {
                let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query(insert("'\\x00'::BYTEA"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    async fn finish(self) {
        if let Db::Postgres(db) = self {
            db.drop().await;
        }
    }
}

/// Each test, once per adapter: `store::sqlite::<test>` and `store::postgres::<test>`.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::Db::sqlite().await;
                    super::$test(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = super::Db::postgres().await;
                    super::$test(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
}

conformance!(
    keeps_the_write_contract,
    concurrent_writers_at_one_version_save_exactly_once,
    reserves_a_request_id_once,
    concurrent_reserves_of_one_request_id_on_two_instances_insert_once,
    adopts_an_upstream_job_once,
    release_removes_the_job_its_events_and_its_lease,
    lists_newest_first_in_pages,
    finds_unfinished_and_creating_jobs_and_counts_states,
    pages_through_events,
    remembers_uploads,
    keeps_tier_promotions,
    records_rates_and_sums_served_requests,
    answers_ping_and_last_sequences,
    leases_give_each_job_one_holder,
    concurrent_lease_claims_on_two_instances_never_share_a_job,
    refuses_a_schema_newer_than_it_knows,
);

fn message(text: &str, upstream_id: Option<&str>) -> NewEvent {
    NewEvent {
        kind: EventKind::Message,
        created_at: now_millis(),
        level: "info".to_owned(),
        message: text.to_owned(),
        upstream_id: upstream_id.map(str::to_owned),
        metrics: None,
        checkpoint: None,
        job: None,
    }
}

fn state_change(job: &Job, text: &str) -> NewEvent {
    NewEvent {
        kind: EventKind::StateChanged,
        job: Some(Box::new(job.clone())),
        ..message(text, None)
    }
}

fn with_state(job: &Job, state: JobState) -> Job {
    Job {
        state,
        ..job.clone()
    }
}

fn saved(outcome: Recorded) -> Job {
    match outcome {
        Recorded::Saved(job, _) => job,
        other => panic!("expected the write to be saved, got {other:?}"),
    }
}

fn new_job(request_id: &str) -> Job {
    let mut job = Job::creating("gpt-4o-mini".to_owned(), Method::Supervised, now_millis());
    job.request_id = Some(request_id.to_owned());
    job
}

/// A reserved job, then linked upstream and moved to `state` by one write (with an event).
async fn job_in(
    store: &dyn Store,
    request_id: &str,
    upstream: Option<&str>,
    state: JobState,
) -> Job {
    let job = new_job(request_id);
    assert!(matches!(
        store.reserve(&job, "fp").await.unwrap(),
        Reservation::Inserted
    ));
    if upstream.is_none() && state == JobState::Creating {
        return job;
    }
    let next = Job {
        upstream_id: upstream.map(str::to_owned),
        finished_at: state.is_terminal().then(now_millis),
        ..with_state(&job, state)
    };
    saved(
        store
            .record(
                &next,
                job.version,
                vec![state_change(&next, state.as_str())],
            )
            .await
            .unwrap(),
    )
}

/// `record` is a compare-and-set on the version; the log keeps its shape; a finished job
/// takes no further write.
async fn keeps_the_write_contract(db: &Db) {
    let store = &*db.open().await;
    let mut new = Job::creating("gpt-4o-mini".to_owned(), Method::Supervised, now_millis());
    new.request_id = Some("store-contract".to_owned());
    assert!(matches!(
        store.reserve(&new, "fp").await.unwrap(),
        Reservation::Inserted
    ));
    let read = store.get(&new.id).await.unwrap().unwrap();
    assert_eq!(read.version, 0);

    // A write at the version read is saved and moves the version on.
    let running = with_state(&read, JobState::Running);
    let first = saved(
        store
            .record(
                &running,
                read.version,
                vec![state_change(&running, "running")],
            )
            .await
            .unwrap(),
    );
    assert_eq!(first.version, read.version + 1);
    assert_eq!(first.last_sequence, 1);
    assert_eq!(store.get(&new.id).await.unwrap().unwrap(), first);

    // A second writer that read the same version loses: nothing written, the newer job returned.
    let stale = store
        .record(&read, read.version, vec![message("stale", Some("ev-1"))])
        .await
        .unwrap();
    match stale {
        Recorded::Conflict(current) => assert_eq!(current, first),
        other => panic!("a stale write must conflict, got {other:?}"),
    }
    assert_eq!(
        store.events_after(&new.id, 0, 100).await.unwrap().len(),
        1,
        "a conflicting write appends nothing"
    );
    assert_eq!(store.get(&new.id).await.unwrap().unwrap(), first);

    // Re-applied on what was read again, it goes through; a repeated upstream event is skipped.
    let again = saved(
        store
            .record(
                &first,
                first.version,
                vec![
                    message("one", Some("ev-1")),
                    message("one again", Some("ev-1")),
                ],
            )
            .await
            .unwrap(),
    );
    assert_eq!(again.version, first.version + 1);
    assert_eq!(again.last_sequence, 2);

    // The store refuses a log of the wrong shape, whoever asks.
    let cancelled = with_state(&again, JobState::Cancelled);
    for (events, why) in [
        (vec![], "finished without a terminal event"),
        (
            vec![state_change(&cancelled, "end"), message("after", None)],
            "an event after the terminal one",
        ),
        (
            vec![
                state_change(&cancelled, "end"),
                state_change(&cancelled, "end again"),
            ],
            "two terminal events",
        ),
        (
            vec![state_change(
                &with_state(&again, JobState::Succeeded),
                "other end",
            )],
            "a terminal event for another state",
        ),
    ] {
        assert!(
            store
                .record(&cancelled, again.version, events)
                .await
                .is_err(),
            "{why}"
        );
    }
    assert_eq!(store.get(&new.id).await.unwrap().unwrap(), again);

    // One terminal transition; after it the job takes no write, at any version.
    let ended = saved(
        store
            .record(
                &cancelled,
                again.version,
                vec![state_change(&cancelled, "cancelled")],
            )
            .await
            .unwrap(),
    );
    assert_eq!(ended.state, JobState::Cancelled);
    let succeeded = with_state(&ended, JobState::Succeeded);
    for version in [again.version, ended.version] {
        match store
            .record(
                &succeeded,
                version,
                vec![state_change(&succeeded, "succeeded")],
            )
            .await
            .unwrap()
        {
            Recorded::Finished(current) => assert_eq!(current, ended),
            other => panic!("a finished job takes no write, got {other:?}"),
        }
    }
    match store
        .record(&ended, ended.version, vec![message("late", Some("ev-2"))])
        .await
        .unwrap()
    {
        Recorded::Finished(_) => {}
        other => panic!("no event after the terminal one, got {other:?}"),
    }
    let log = store.events_after(&new.id, 0, 100).await.unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log.iter().filter(|e| e.is_terminal()).count(), 1);
    assert!(log.last().unwrap().is_terminal());
    assert_eq!(store.get(&new.id).await.unwrap().unwrap(), ended);
    assert!(store.unfinished().await.unwrap().is_empty());

    // A job that is not there is not a conflict.
    let missing = Job::creating("gpt-4o-mini".to_owned(), Method::Supervised, now_millis());
    assert!(store.record(&missing, 0, vec![]).await.is_err());
}

/// Writers racing at one version: exactly one terminal transition is saved.
async fn concurrent_writers_at_one_version_save_exactly_once(db: &Db) {
    let store = db.open().await;
    let new = new_job("concurrent");
    store.reserve(&new, "fp").await.unwrap();
    let read = store.get(&new.id).await.unwrap().unwrap();
    let writers: Vec<_> = [JobState::Cancelled, JobState::Succeeded, JobState::Failed]
        .into_iter()
        .cycle()
        .take(12)
        .map(|state| {
            let store = store.clone();
            let job = with_state(&read, state);
            tokio::spawn(async move {
                store
                    .record(&job, job.version, vec![state_change(&job, "end")])
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut saves = 0;
    for w in writers {
        match w.await.unwrap() {
            Recorded::Saved(..) => saves += 1,
            Recorded::Finished(_) | Recorded::Conflict(_) => {}
        }
    }
    assert_eq!(saves, 1, "one terminal transition wins");
    let log = store.events_after(&new.id, 0, 100).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        store.get(&new.id).await.unwrap().unwrap().state,
        log[0].event.job.as_ref().unwrap().state
    );
}

/// A request id is reserved once; a second reservation finds the first job and fingerprint.
async fn reserves_a_request_id_once(db: &Db) {
    let store = db.open().await;
    let first = new_job("req-1");
    assert!(matches!(
        store.reserve(&first, "fp-1").await.unwrap(),
        Reservation::Inserted
    ));
    let second = new_job("req-1");
    match store.reserve(&second, "fp-2").await.unwrap() {
        Reservation::Existing(job, fingerprint) => {
            assert_eq!(*job, first);
            assert_eq!(
                fingerprint, "fp-1",
                "the fingerprint of the request that reserved it"
            );
        }
        other => panic!("a taken request id must give the existing job, got {other:?}"),
    }
    assert_eq!(
        store.get(&second.id).await.unwrap(),
        None,
        "the loser is not stored"
    );
    assert_eq!(store.get(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(
        store.get_by_request("req-1").await.unwrap(),
        Some((first, "fp-1".to_owned()))
    );
    assert_eq!(store.get_by_request("req-2").await.unwrap(), None);
    assert_eq!(store.get("job-unknown").await.unwrap(), None);
}

/// Two instances (as two replicas) reserving one request id at once: one Inserted, the
/// other Existing with the winner; over many rounds.
async fn concurrent_reserves_of_one_request_id_on_two_instances_insert_once(db: &Db) {
    let (a, b) = (db.open().await, db.open().await);
    for round in 0..200 {
        let request_id = format!("race-{round}");
        let racers: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .map(|store| {
                let job = new_job(&request_id);
                tokio::spawn(async move {
                    let reservation = store.reserve(&job, "fp").await.unwrap();
                    (job, reservation)
                })
            })
            .collect();
        let mut inserted = Vec::new();
        let mut existing = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                (job, Reservation::Inserted) => inserted.push(job.id),
                (_, Reservation::Existing(job, _)) => existing.push(job.id),
            }
        }
        assert_eq!(inserted.len(), 1, "round {round}: exactly one reservation");
        assert_eq!(
            existing, inserted,
            "round {round}: the other finds the winner"
        );
        let (stored, _) = a.get_by_request(&request_id).await.unwrap().unwrap();
        assert_eq!(stored.id, inserted[0]);
    }
    let counts = a.count_by_state().await.unwrap();
    assert_eq!(counts, vec![("creating".to_owned(), 200)]);
}

/// Adopting a provider job twice stores it once; it is found by its upstream id.
async fn adopts_an_upstream_job_once(db: &Db) {
    let store = db.open().await;
    let mut adopted = Job::creating("gpt-4o-mini".to_owned(), Method::Supervised, now_millis());
    adopted.upstream_id = Some("ftjob-adopted".to_owned());
    adopted.state = JobState::Running;
    assert_eq!(store.adopt(&adopted).await.unwrap(), adopted);
    let mut again = Job::creating("gpt-4o-mini".to_owned(), Method::Supervised, now_millis());
    again.upstream_id = Some("ftjob-adopted".to_owned());
    assert_eq!(
        store.adopt(&again).await.unwrap(),
        adopted,
        "the first adoption stays"
    );
    assert_eq!(store.get(&again.id).await.unwrap(), None);
    assert_eq!(
        store.get_by_upstream("ftjob-adopted").await.unwrap(),
        Some(adopted)
    );
    assert_eq!(store.get_by_upstream("ftjob-other").await.unwrap(), None);
}

/// A released reservation leaves nothing behind: job, events, lease, request id.
async fn release_removes_the_job_its_events_and_its_lease(db: &Db) {
    let store = db.open().await;
    let job = job_in(&*store, "released", Some("ftjob-r"), JobState::Running).await;
    assert!(
        store
            .claim_lease(&job.id, "replica-a", Duration::from_secs(3600))
            .await
            .unwrap()
    );
    assert_eq!(store.events_after(&job.id, 0, 10).await.unwrap().len(), 1);
    store.release(&job.id).await.unwrap();
    assert_eq!(store.get(&job.id).await.unwrap(), None);
    assert_eq!(store.get_by_request("released").await.unwrap(), None);
    assert_eq!(store.get_by_upstream("ftjob-r").await.unwrap(), None);
    assert!(store.events_after(&job.id, 0, 10).await.unwrap().is_empty());
    assert!(
        store
            .last_sequences(std::slice::from_ref(&job.id))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_leases("replica-a", Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty(),
        "the lease went with the job"
    );
    assert!(
        !store
            .claim_lease(&job.id, "replica-b", Duration::from_secs(3600))
            .await
            .unwrap()
    );
    // The request id is free again.
    assert!(matches!(
        store.reserve(&new_job("released"), "fp").await.unwrap(),
        Reservation::Inserted
    ));
    // Releasing what is not there is no error.
    store.release("job-never-stored").await.unwrap();
}

/// Jobs newest first (ties by id), in pages that neither skip nor repeat; a state filter.
async fn lists_newest_first_in_pages(db: &Db) {
    let store = db.open().await;
    let mut all = Vec::new();
    for (i, created_at) in [100, 300, 200, 300, 300, 50, 200].into_iter().enumerate() {
        let mut job = new_job(&format!("list-{i}"));
        job.created_at = created_at;
        if i % 2 == 0 {
            job.state = JobState::Queued;
        }
        store.reserve(&job, "fp").await.unwrap();
        all.push(job);
    }
    all.sort_by(|x, y| (y.created_at, &y.id).cmp(&(x.created_at, &x.id)));
    for state in [
        None,
        Some(JobState::Queued),
        Some(JobState::Creating),
        Some(JobState::Failed),
    ] {
        let expected: Vec<&Job> = all
            .iter()
            .filter(|j| state.is_none_or(|s| j.state == s))
            .collect();
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = store.list(state, cursor.as_deref(), 2).await.unwrap();
            assert!(page.jobs.len() <= 2);
            listed.extend(page.jobs);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(
            listed.iter().collect::<Vec<_>>(),
            expected,
            "state {state:?}"
        );
    }
    let whole = store.list(None, None, 100).await.unwrap();
    assert_eq!(whole.jobs, all);
    assert!(whole.next.is_none());
    assert!(store.list(None, Some("not-a-cursor"), 2).await.is_err());
}

/// Unfinished jobs (oldest first), reservations still being created, counts per state.
async fn finds_unfinished_and_creating_jobs_and_counts_states(db: &Db) {
    let store = db.open().await;
    let creating = job_in(&*store, "u-creating", None, JobState::Creating).await;
    let running = job_in(&*store, "u-running", Some("ftjob-u1"), JobState::Running).await;
    let queued = job_in(&*store, "u-queued", Some("ftjob-u2"), JobState::Queued).await;
    job_in(&*store, "u-done", Some("ftjob-u3"), JobState::Succeeded).await;
    job_in(&*store, "u-failed", Some("ftjob-u4"), JobState::Failed).await;
    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let mut unfinished = ids(store.unfinished().await.unwrap());
    unfinished.sort();
    let mut expected = vec![creating.id.clone(), running.id, queued.id];
    expected.sort();
    assert_eq!(unfinished, expected);
    assert_eq!(ids(store.creating().await.unwrap()), vec![creating.id]);
    let mut counts = store.count_by_state().await.unwrap();
    counts.sort();
    let count = |s: &str| (s.to_owned(), 1);
    assert_eq!(
        counts,
        vec![
            count("creating"),
            count("failed"),
            count("queued"),
            count("running"),
            count("succeeded")
        ]
    );
}

/// The log reads back in order, in pages, from any sequence.
async fn pages_through_events(db: &Db) {
    let store = db.open().await;
    let job = job_in(&*store, "events", Some("ftjob-e"), JobState::Running).await;
    let events: Vec<NewEvent> = (0..5)
        .map(|i| message(&format!("m{i}"), Some(&format!("ev-{i}"))))
        .collect();
    let (after, appended) = store
        .record(&job, job.version, events)
        .await
        .unwrap()
        .saved()
        .unwrap();
    assert_eq!(after.last_sequence, 6);
    assert_eq!(
        appended.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6]
    );
    let all = store.events_after(&job.id, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert_eq!(all[1..], appended[..]);
    let first: Vec<JobEvent> = store.events_after(&job.id, 0, 2).await.unwrap();
    assert_eq!(first, all[..2]);
    assert_eq!(store.events_after(&job.id, 2, 3).await.unwrap(), all[2..5]);
    assert_eq!(store.events_after(&job.id, 5, 100).await.unwrap(), all[5..]);
    assert!(
        store
            .events_after(&job.id, 6, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .events_after("job-other", 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn remembers_uploads(db: &Db) {
    let store = db.open().await;
    assert_eq!(store.uploaded_file("abc").await.unwrap(), None);
    store.remember_upload("abc", "file-1").await.unwrap();
    assert_eq!(
        store.uploaded_file("abc").await.unwrap().as_deref(),
        Some("file-1")
    );
    store.remember_upload("abc", "file-2").await.unwrap();
    assert_eq!(
        store.uploaded_file("abc").await.unwrap().as_deref(),
        Some("file-2"),
        "the newest upload"
    );
}

async fn keeps_tier_promotions(db: &Db) {
    let store = db.open().await;
    assert!(store.tier_models().await.unwrap().is_empty());
    store
        .set_tier_model("fast", "ft:a", Some("job-a"))
        .await
        .unwrap();
    store.set_tier_model("pro", "gpt-4o", None).await.unwrap();
    store
        .set_tier_model("fast", "ft:b", Some("job-b"))
        .await
        .unwrap();
    let mut tiers = store.tier_models().await.unwrap();
    tiers.sort();
    assert_eq!(
        tiers,
        vec![
            (
                "fast".to_owned(),
                "ft:b".to_owned(),
                Some("job-b".to_owned())
            ),
            ("pro".to_owned(), "gpt-4o".to_owned(), None),
        ]
    );
    // Another instance (another replica) reads the same promotions.
    let mut elsewhere = db.open().await.tier_models().await.unwrap();
    elsewhere.sort();
    assert_eq!(elsewhere, tiers);
}

fn served(i: usize, tier: &str, split: &str, ok: bool, latency_ms: f64) -> Served {
    Served {
        id: format!("resp-{tier}-{split}-{i}"),
        tier: tier.to_owned(),
        split: split.to_owned(),
        provider: "openai".to_owned(),
        model: format!("model-{}", i / 10),
        ok,
        error_code: (!ok).then(|| "UPSTREAM_UNAVAILABLE".to_owned()),
        fallback: i % 4 == 0,
        input_tokens: 100 + i as u64,
        output_tokens: 10 + i as u64,
        cached_tokens: i as u64 % 5,
        cache_write_tokens: i as u64 % 7,
        knowledge_tokens: i as u64 % 2,
        // Sums of these differ in the last bits with the order of addition.
        cost_usd: 0.1 + i as f64 * 0.000_123_7,
        latency_ms,
        created_at: 1_000 + i as i64,
    }
}

/// A fixed history of served requests over two tiers and a split, with ratings.
async fn served_history(store: &dyn Store) {
    let mut rows = Vec::new();
    for i in 0..40 {
        let (tier, split) = match i % 3 {
            0 => ("fast", ""),
            1 => ("pro", ""),
            _ => ("fast", "ab"),
        };
        // Latencies with ties, out of order; every 6th request failed.
        rows.push(served(
            i,
            tier,
            split,
            i % 6 != 5,
            ((i * 37) % 11) as f64 + 0.5,
        ));
    }
    store.record_served(&rows[..25]).await.unwrap();
    store.record_served(&rows[25..]).await.unwrap();
    store.record_served(&[]).await.unwrap();
    for (i, rating) in [(0, 1), (3, -1), (6, 1), (1, 1), (2, -1), (5, 1), (8, 1)] {
        let row = &rows[i];
        assert_eq!(
            store.rate(&row.id, rating).await.unwrap(),
            Some((row.tier.clone(), row.split.clone()))
        );
    }
    assert_eq!(store.rate("resp-unknown", 1).await.unwrap(), None);
}

/// Served requests add up per (tier, split): counts, tokens, cost, nearest-rank latency
/// percentiles of the answered ones, ratings, the latest model.
async fn records_rates_and_sums_served_requests(db: &Db) {
    let store = db.open().await;
    assert!(store.tier_stats(None).await.unwrap().is_empty());
    served_history(&*store).await;
    let stats = store.tier_stats(None).await.unwrap();
    let keys: Vec<(&str, &str)> = stats
        .iter()
        .map(|s| (s.tier.as_str(), s.split.as_str()))
        .collect();
    assert_eq!(keys, vec![("fast", ""), ("fast", "ab"), ("pro", "")]);
    // ("fast", "") holds the requests i = 0, 3, 6, ..., 39.
    let fast = &stats[0];
    let rows: Vec<Served> = (0..40)
        .filter(|i| i % 3 == 0)
        .map(|i| served(i, "fast", "", i % 6 != 5, ((i * 37) % 11) as f64 + 0.5))
        .collect();
    assert_eq!(fast.requests, 14);
    assert_eq!(fast.errors, rows.iter().filter(|r| !r.ok).count() as u64);
    assert_eq!(
        fast.fallbacks,
        rows.iter().filter(|r| r.fallback).count() as u64
    );
    assert_eq!(
        fast.input_tokens,
        rows.iter().map(|r| r.input_tokens).sum::<u64>()
    );
    assert_eq!(
        fast.cache_write_tokens,
        rows.iter().map(|r| r.cache_write_tokens).sum::<u64>()
    );
    assert_eq!(
        fast.cost_usd,
        rows.iter().fold(0.0, |sum, r| sum + r.cost_usd)
    );
    assert_eq!(
        fast.model, "model-3",
        "the model of the latest request (i = 39)"
    );
    assert_eq!((fast.thumbs_up, fast.thumbs_down), (2, 1));
    let mut latencies: Vec<f64> = rows.iter().filter(|r| r.ok).map(|r| r.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    let rank = |q: f64| latencies[((q * latencies.len() as f64).ceil() as usize).max(1) - 1];
    assert_eq!(
        (fast.p50_ms, fast.p95_ms, fast.p99_ms),
        (rank(0.5), rank(0.95), rank(0.99))
    );
    // One tier, or one split, alone.
    assert_eq!(
        store.tier_stats(Some("pro")).await.unwrap(),
        vec![stats[2].clone()]
    );
    assert_eq!(
        store.tier_stats(Some("ab")).await.unwrap(),
        vec![stats[1].clone()]
    );
    assert!(store.tier_stats(Some("none")).await.unwrap().is_empty());
}

async fn answers_ping_and_last_sequences(db: &Db) {
    let store = db.open().await;
    store.ping().await.unwrap();
    let a = job_in(&*store, "seq-a", Some("ftjob-sa"), JobState::Running).await;
    let b = job_in(&*store, "seq-b", None, JobState::Creating).await;
    let a = store
        .record(&a, a.version, vec![message("x", None), message("y", None)])
        .await
        .unwrap()
        .saved()
        .unwrap()
        .0;
    let mut sequences = store
        .last_sequences(&[a.id.clone(), b.id.clone(), "job-missing".to_owned()])
        .await
        .unwrap();
    sequences.sort();
    let mut expected = vec![(a.id.clone(), 3), (b.id.clone(), 0)];
    expected.sort();
    assert_eq!(sequences, expected);
    assert!(store.last_sequences(&[]).await.unwrap().is_empty());
}

/// One holder per lease: claimed, renewed, refused to another until it lapses, taken after,
/// dropped when the job finishes or its holder lets go.
async fn leases_give_each_job_one_holder(db: &Db) {
    let store = db.open().await;
    let hour = Duration::from_secs(3600);
    let one = job_in(&*store, "l-1", Some("ftjob-l1"), JobState::Running).await;
    let two = job_in(&*store, "l-2", Some("ftjob-l2"), JobState::Queued).await;
    let creating = job_in(&*store, "l-3", None, JobState::Creating).await;
    let done = job_in(&*store, "l-4", Some("ftjob-l4"), JobState::Succeeded).await;
    let mut both = vec![one.id.clone(), two.id.clone()];
    both.sort();

    // Every unfinished job linked upstream, and nothing else.
    assert_eq!(store.claim_leases("a", hour).await.unwrap(), both);
    assert_eq!(
        store.claim_leases("a", hour).await.unwrap(),
        both,
        "renewed"
    );
    assert!(store.claim_leases("b", hour).await.unwrap().is_empty());
    assert!(!store.claim_lease(&one.id, "b", hour).await.unwrap());
    assert!(
        store.claim_lease(&one.id, "a", hour).await.unwrap(),
        "its holder renews it"
    );
    assert!(
        !store.claim_lease(&done.id, "a", hour).await.unwrap(),
        "a finished job has no lease"
    );

    // A reservation's lease is taken one by one; a lapsed one goes to whoever asks.
    assert!(
        store
            .claim_lease(&creating.id, "b", Duration::ZERO)
            .await
            .unwrap()
    );
    // The lease lapsed the moment it was taken: let the clock move past it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        store.claim_lease(&creating.id, "a", hour).await.unwrap(),
        "taken once lapsed"
    );
    assert!(!store.claim_lease(&creating.id, "b", hour).await.unwrap());
    let mut held = both.clone();
    held.push(creating.id.clone());
    held.sort();
    assert_eq!(store.claim_leases("a", hour).await.unwrap(), held);
    // Its creator's claims renew it with the others, lapsed or not.
    assert!(
        store
            .claim_lease(&creating.id, "a", Duration::ZERO)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.claim_leases("a", hour).await.unwrap(), held);
    assert!(
        !store.claim_lease(&creating.id, "b", hour).await.unwrap(),
        "renewed by the claim"
    );

    // A finished job's lease is dropped.
    let finished = Job {
        finished_at: Some(now_millis()),
        ..with_state(&one, JobState::Cancelled)
    };
    saved(
        store
            .record(
                &finished,
                one.version,
                vec![state_change(&finished, "cancelled")],
            )
            .await
            .unwrap(),
    );
    let mut held = vec![two.id.clone(), creating.id.clone()];
    held.sort();
    assert_eq!(store.claim_leases("a", hour).await.unwrap(), held);

    // Let go at shutdown: another holder takes them at once.
    store.release_leases("a").await.unwrap();
    assert_eq!(
        store.claim_leases("b", hour).await.unwrap(),
        vec![two.id.clone()]
    );
    assert!(store.claim_leases("a", hour).await.unwrap().is_empty());

    // Leases lapse `ttl` after their last renewal.
    assert_eq!(
        store.claim_leases("b", Duration::ZERO).await.unwrap(),
        vec![two.id.clone()]
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.claim_leases("a", hour).await.unwrap(),
        vec![two.id.clone()]
    );
    assert!(store.claim_leases("b", hour).await.unwrap().is_empty());
}

/// Two instances claiming every lease at once, over and over: no job goes to both, and
/// every job goes to one of them.
async fn concurrent_lease_claims_on_two_instances_never_share_a_job(db: &Db) {
    let (a, b) = (db.open().await, db.open().await);
    let mut jobs = Vec::new();
    for i in 0..12 {
        let job = job_in(
            &*a,
            &format!("c-{i}"),
            Some(&format!("ftjob-c{i}")),
            JobState::Running,
        )
        .await;
        jobs.push(job.id);
    }
    jobs.sort();
    for round in 0..30 {
        let claims: Vec<_> = [(a.clone(), "a"), (b.clone(), "b")]
            .into_iter()
            .map(|(store, holder)| {
                tokio::spawn(async move {
                    store
                        .claim_leases(holder, Duration::from_secs(3600))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut all = Vec::new();
        for claim in claims {
            all.extend(claim.await.unwrap());
        }
        all.sort();
        assert_eq!(all, jobs, "round {round}: each job has exactly one holder");
        a.release_leases("a").await.unwrap();
        b.release_leases("b").await.unwrap();
    }
}

/// A database migrated by a newer build is refused, saying so.
async fn refuses_a_schema_newer_than_it_knows(db: &Db) {
    db.open().await;
    db.age_schema(9_999).await;
    let refused = db.try_open().await.map(drop).unwrap_err().to_string();
    assert!(
        refused.contains("schema is at version 9999, newer than this build knows"),
        "{refused}"
    );
    if let Db::Postgres(database) = db {
        let refused = PgStore::migrate(&database.url)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("newer than this build knows"), "{refused}");
    }
}

/// The same served history gives the same statistics on both adapters.
#[tokio::test]
async fn tier_stats_agree_across_adapters() {
    let (sqlite, postgres) = (Db::sqlite().await, Db::postgres().await);
    let (one, other) = (sqlite.open().await, postgres.open().await);
    served_history(&*one).await;
    served_history(&*other).await;
    for tier in [None, Some("fast"), Some("pro"), Some("ab"), Some("none")] {
        let stats: Vec<TierStats> = one.tier_stats(tier).await.unwrap();
        assert_eq!(stats, other.tier_stats(tier).await.unwrap(), "{tier:?}");
    }
    postgres.finish().await;
}

#[tokio::test]
async fn sqlite_tells_no_changes_its_own_process_did_not_make() {
    let db = Db::sqlite().await;
    assert!(db.open().await.listen().await.unwrap().is_none());
}

/// Receives the next change, failing the test rather than hanging when none comes.
async fn next_change(changes: &mut tokio::sync::mpsc::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(60), changes.recv())
        .await
        .expect("no change notice within a minute")
        .expect("the change feed ended")
}

/// A PostgreSQL database with two store instances (two replicas), the first listening.
async fn two_replicas_one_listening() -> (
    Db,
    Arc<dyn Store>,
    Arc<dyn Store>,
    tokio::sync::mpsc::Receiver<Change>,
) {
    let db = Db::postgres().await;
    let (here, there) = (db.open().await, db.open().await);
    let changes = here
        .listen()
        .await
        .unwrap()
        .expect("PostgreSQL tells changes");
    (db, here, there, changes)
}

/// Writes through one instance (one replica) reach the listener of another; its own do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tells_each_replica_the_writes_of_the_others() {
    let (db, here, there, mut changes) = two_replicas_one_listening().await;
    // A write of its own comes first, and is not told.
    job_in(&*here, "own", Some("ftjob-own"), JobState::Running).await;
    here.set_tier_model("fast", "ft:own", None).await.unwrap();

    let job = job_in(&*there, "theirs", Some("ftjob-theirs"), JobState::Running).await;
    assert_eq!(
        next_change(&mut changes).await,
        Change::Job {
            job_id: job.id.clone(),
            last_sequence: 1
        }
    );
    there
        .record(
            &job,
            job.version,
            vec![message("a", None), message("b", None)],
        )
        .await
        .unwrap()
        .saved()
        .unwrap();
    assert_eq!(
        next_change(&mut changes).await,
        Change::Job {
            job_id: job.id.clone(),
            last_sequence: 3
        }
    );
    there
        .set_tier_model("fast", "ft:theirs", None)
        .await
        .unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Tiers);
    let creating = job_in(&*there, "to-release", None, JobState::Creating).await;
    there.release(&creating.id).await.unwrap();
    assert_eq!(
        next_change(&mut changes).await,
        Change::Released {
            job_id: creating.id
        }
    );
    // A write that is refused tells nothing: the next notice is the next write.
    let stale = there
        .record(&job, job.version, vec![message("stale", None)])
        .await
        .unwrap();
    assert!(matches!(stale, Recorded::Conflict(_)));
    there.set_tier_model("pro", "gpt-4o", None).await.unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Tiers);
    drop(changes);
    db.finish().await;
}

/// `finetune migrate` on an empty database, then again (nothing left to do).
#[tokio::test]
async fn postgres_migrate_applies_what_is_missing_once() {
    let db = Db::postgres().await;
    let Db::Postgres(database) = &db else {
        unreachable!()
    };
    let latest = PgStore::schema_version();
    assert!(latest >= 6);
    assert_eq!(
        PgStore::migrate(&database.url).await.unwrap(),
        Migrated {
            from: 0,
            to: latest
        }
    );
    assert_eq!(
        PgStore::migrate(&database.url).await.unwrap(),
        Migrated {
            from: latest,
            to: latest
        }
    );
    db.open().await.ping().await.unwrap();
    db.finish().await;
}

/// A notice that is not one the store sends is skipped: the feed goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_change_feed_skips_malformed_notices() {
    let (db, _here, there, mut changes) = two_replicas_one_listening().await;
    let Db::Postgres(database) = &db else {
        unreachable!()
    };
    let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
    for malformed in [
        "",
        "elsewhere",
        "elsewhere job x job-1",
        "elsewhere gone job-1",
    ] {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(finetune_store_postgres::CHANNEL)
            .bind(malformed)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
    there.set_tier_model("fast", "ft:x", None).await.unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Tiers);
    drop(changes);
    db.finish().await;
}

/// Replicas starting together on an empty database: all start, the schema is migrated once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_starting_together_migrate_once() {
    let db = Db::postgres().await;
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let Db::Postgres(database) = &db else {
                unreachable!()
            };
            let url = database.url.clone();
            tokio::spawn(async move { PgStore::connect(&url, PoolSettings::default()).await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap().ping().await.unwrap();
    }
    let Db::Postgres(database) = &db else {
        unreachable!()
    };
    let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    assert_eq!(applied, (1..=PgStore::schema_version()).collect::<Vec<_>>());
    db.finish().await;
}

/// Cuts the listening connection of a replica, with the database refusing new connections
/// meanwhile when `refusing`: once it is back, the feed says Lagged and goes on.
async fn cut_the_change_feed(refusing: bool) {
    let (db, _here, there, mut changes) = two_replicas_one_listening().await;
    let Db::Postgres(database) = &db else {
        unreachable!()
    };
    let name = database.url.rsplit('/').next().unwrap().to_owned();
    let admin_url = std::env::var(crate::common::postgres::URL_VARIABLE).unwrap();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let allow = |allowed: bool| {
        sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allowed}"))
    };
    if refusing {
        sqlx::raw_sql(allow(false))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(&name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(killed, vec![true], "one listening connection");
    if refusing {
        sqlx::raw_sql(allow(true))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    admin.close().await.unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Lagged);
    there
        .set_tier_model("fast", "ft:after", None)
        .await
        .unwrap();
    assert_eq!(next_change(&mut changes).await, Change::Tiers);
    drop(changes);
    db.finish().await;
}

/// When the listening connection is lost, the listener says Lagged and listens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_change_feed_reports_a_lost_connection_and_recovers() {
    cut_the_change_feed(false).await;
}

/// The same while the database refuses connections for a moment: the feed keeps trying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_change_feed_outlasts_a_database_refusing_connections() {
    cut_the_change_feed(true).await;
}

/// Dataset bytes saved through one replica are read through another, whole: uploaded to
/// one replica's directory, fetched into another's on first use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shares_dataset_bytes_between_replicas() {
    use finetune_core::store::{DatasetStore, SharedDatasets};
    let db = Db::postgres().await;
    let Db::Postgres(database) = &db else {
        unreachable!()
    };
    let connect = || PgStore::connect(&database.url, PoolSettings::default());
    let (here, there) = (
        Arc::new(connect().await.unwrap()),
        Arc::new(connect().await.unwrap()),
    );
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let uploads = DatasetStore::open(dirs.0.path())
        .unwrap()
        .with_shared(here.clone());
    let elsewhere = DatasetStore::open(dirs.1.path())
        .unwrap()
        .with_shared(there.clone());
    // Several chunks of 1 MiB, the last one partial.
    let bytes: Vec<u8> = (0..(5 << 19) + 7)
        .map(|i: u32| (i * 31 % 251) as u8)
        .collect();
    let stored = uploads.put(&bytes, u64::MAX).await.unwrap();
    let fetched = elsewhere.path(&stored.id).await.unwrap();
    assert!(fetched.starts_with(dirs.1.path()));
    assert_eq!(std::fs::read(&fetched).unwrap(), bytes);
    assert!(
        elsewhere.path(&"0".repeat(64)).await.is_err(),
        "never saved"
    );

    // Two replicas saving one dataset at once: both succeed, it is saved once, whole.
    let files = tempfile::tempdir().unwrap();
    for (name, size) in [("empty", 0), ("small", 10), ("exact", 1 << 20)] {
        let source = files.path().join(name);
        let content: Vec<u8> = (0..size).map(|i: u32| (i % 7) as u8).collect();
        std::fs::write(&source, &content).unwrap();
        let saves: Vec<_> = [here.clone(), there.clone()]
            .into_iter()
            .map(|store| {
                let source = source.clone();
                tokio::spawn(async move { store.save_dataset(name, &source).await })
            })
            .collect();
        for save in saves {
            save.await.unwrap().unwrap();
        }
        here.save_dataset(name, &source).await.unwrap();
        let copy = files.path().join(format!("{name}.copy"));
        assert!(there.load_dataset(name, &copy).await.unwrap());
        assert_eq!(std::fs::read(&copy).unwrap(), content, "{name}");
    }
    assert!(
        !there
            .load_dataset("unknown", &files.path().join("x"))
            .await
            .unwrap()
    );
    db.finish().await;
}
