//! The job store's write contract, written against the `Store` port so that every adapter
//! (SQLite now, PostgreSQL later) runs the same checks: `record` is a compare-and-set on
//! the job's version, and a finished job takes no further write.

use finetune_core::domain::job::{EventKind, Job, JobState, Method, NewEvent, now_millis};
use finetune_core::store::{Recorded, Reservation, Store};
use finetune_store_sqlite::SqliteStore;

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

/// The contract every `Store` adapter keeps.
async fn conflict_contract(store: &dyn Store) {
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

#[tokio::test]
async fn sqlite_keeps_the_write_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("jobs.db"))
        .await
        .unwrap();
    conflict_contract(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_at_one_version_save_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        SqliteStore::open(&dir.path().join("jobs.db"))
            .await
            .unwrap(),
    );
    let mut new = Job::creating("gpt-4o-mini".to_owned(), Method::Supervised, now_millis());
    new.request_id = Some("concurrent".to_owned());
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
