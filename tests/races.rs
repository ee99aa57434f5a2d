//! Writers racing on one job: a CancelJob landing while a poll is between its read and its
//! write, polls racing each other. Whatever the order, a job's log has exactly one terminal
//! event, it is the last, and the stored job agrees with it.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use finetune_core::dataset::Catalog;
use finetune_core::domain::job::{EventKind, JobEvent, JobState, Method};
use finetune_core::jobs::{DatasetFile, JobManager, JobsConfig, StartRequest};
use finetune_core::ports::RetryPolicy;
use finetune_core::store::{DatasetStore, Store};
use finetune_emulator::{Emulator, Fault};
use finetune_providers::OpenAiConfig;
use finetune_providers::openai::OpenAi;
use finetune_store_sqlite::SqliteStore;
use tokio_util::sync::CancellationToken;

const EVENTS_ROUTE: &str = "GET /v1/fine_tuning/jobs/{id}/events";

struct Harness {
    manager: Arc<JobManager>,
    store: Arc<SqliteStore>,
    dataset: DatasetFile,
    _dir: tempfile::TempDir,
}

/// A JobManager on its own store, talking to `emulator`. Its pollers wait an hour between
/// polls, so the polls that race are the ones each test starts.
async fn harness(emulator: &Emulator) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("jobs.db"))
            .await
            .unwrap(),
    );
    let datasets = DatasetStore::open(dir.path()).unwrap();
    let provider = OpenAi::new(OpenAiConfig {
        retry: RetryPolicy::none(),
        ..OpenAiConfig::new("sk-test-races", emulator.base_url())
    })
    .unwrap();
    let config = JobsConfig {
        poll_interval: Duration::from_secs(3600),
        ..JobsConfig::default()
    };
    let manager = JobManager::new(
        store.clone(),
        Arc::new(provider),
        Arc::new(Catalog::builtin()),
        datasets,
        config,
        CancellationToken::new(),
    );
    let path = dir.path().join("sample.jsonl");
    let bytes = std::fs::read(common::repo_file(
        "reference/datasets/openai-dotnet_fine_tuning_sample.jsonl",
    ))
    .unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let dataset = DatasetFile {
        path,
        sha256: common::sha256_hex(&bytes),
        name: "sample.jsonl".to_owned(),
    };
    Harness {
        manager,
        store,
        dataset,
        _dir: dir,
    }
}

impl Harness {
    async fn start(&self, request_id: &str) -> String {
        let started = self
            .manager
            .start(StartRequest {
                request_id: request_id.to_owned(),
                training: self.dataset.clone(),
                validation: None,
                model: "gpt-4o-mini".to_owned(),
                method: Method::Supervised,
                hyperparameters: Default::default(),
                suffix: None,
                seed: None,
                metadata: Default::default(),
                accepted: Vec::new(),
            })
            .await
            .unwrap();
        started.job.id
    }

    async fn log(&self, job_id: &str) -> Vec<JobEvent> {
        self.store.events_after(job_id, 0, 10_000).await.unwrap()
    }

    /// Panics unless the log has exactly one terminal event, as its last event, and the
    /// stored job is in that event's state at the log's last sequence.
    async fn assert_one_terminal_event_last(&self, job_id: &str, what: &str) -> JobState {
        let log = self.log(job_id).await;
        let sequences: Vec<u64> = log.iter().map(|e| e.sequence).collect();
        assert_eq!(
            sequences,
            (1..=log.len() as u64).collect::<Vec<_>>(),
            "{what}: gapless"
        );
        let terminal: Vec<&JobEvent> = log.iter().filter(|e| e.is_terminal()).collect();
        assert_eq!(
            terminal.len(),
            1,
            "{what}: one terminal event, got {:?}",
            terminal
                .iter()
                .map(|e| &e.event.message)
                .collect::<Vec<_>>()
        );
        let last = log.last().unwrap();
        assert!(
            last.is_terminal(),
            "{what}: the terminal event is the last; after it: {:?}",
            last.event.message
        );
        let ended = last.event.job.as_ref().unwrap().state;
        let job = self.store.get(job_id).await.unwrap().unwrap();
        assert_eq!(job.state, ended, "{what}: the job agrees with its log");
        assert_eq!(job.last_sequence, last.sequence, "{what}");
        ended
    }
}

/// Waits until the emulator has taken every injected fault (the delayed request is in flight).
async fn until_faults_taken(emulator: &Emulator) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !emulator.faults().pending().is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the delayed poll reaches the emulator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_a_poll_leaves_one_terminal_event_a_hundred_times_in_a_row() {
    let emulator = common::emulator(20.0).await;
    let h = harness(&emulator).await;
    let mut outcomes = std::collections::BTreeMap::new();
    for i in 0..100 {
        let id = h.start(&format!("race-{i}")).await;
        // The poll reads the job, asks OpenAI for it, then waits on a slow events page:
        // the cancel lands between its read and its write.
        emulator
            .faults()
            .inject(EVENTS_ROUTE, Fault::Latency { ms: 60 }, 1);
        let poll = {
            let manager = h.manager.clone();
            let id = id.clone();
            tokio::spawn(async move { manager.poll_once(&id).await })
        };
        until_faults_taken(&emulator).await;
        let cancelled = h.manager.cancel(&id).await.unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled, "run {i}");
        poll.await.unwrap().unwrap();
        // OpenAI reports the job cancelled after our cancel: a later poll adds nothing.
        assert!(h.manager.poll_once(&id).await.unwrap(), "run {i}");
        let ended = h
            .assert_one_terminal_event_last(&id, &format!("run {i}"))
            .await;
        assert_eq!(ended, JobState::Cancelled, "run {i}");
        *outcomes.entry(h.log(&id).await.len()).or_insert(0) += 1;
    }
    eprintln!("log lengths over 100 runs: {outcomes:?}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_polls_record_every_event_once_and_one_end() {
    let emulator = common::emulator(400.0).await;
    let h = harness(&emulator).await;
    let id = h.start("polls").await;
    // Several pollers at once (the resume path and a poller, say) until the job ends.
    let mut finished = false;
    while !finished {
        let polls: Vec<_> = (0..3)
            .map(|_| {
                let manager = h.manager.clone();
                let id = id.clone();
                tokio::spawn(async move { manager.poll_once(&id).await })
            })
            .collect();
        for poll in polls {
            finished |= poll.await.unwrap().unwrap();
        }
    }
    let ended = h.assert_one_terminal_event_last(&id, "racing polls").await;
    assert_eq!(ended, JobState::Succeeded);
    let log = h.log(&id).await;
    let mut upstream: Vec<&str> = log
        .iter()
        .filter_map(|e| e.event.upstream_id.as_deref())
        .collect();
    let all = upstream.len();
    upstream.sort_unstable();
    upstream.dedup();
    assert_eq!(upstream.len(), all, "no upstream event recorded twice");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_arrive_while_the_job_runs_and_a_cancelled_job_keeps_them() {
    let emulator = common::emulator(20.0).await;
    let h = harness(&emulator).await;
    let id = h.start("live").await;
    // Poll until the first checkpoint is recorded, while OpenAI still says running.
    let first = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            assert!(
                !h.manager.poll_once(&id).await.unwrap(),
                "the job ended before any checkpoint was recorded"
            );
            let log = h.log(&id).await;
            if let Some(c) = log.iter().find(|e| e.event.kind == EventKind::Checkpoint) {
                return c.clone();
            }
        }
    })
    .await
    .expect("a checkpoint while the job runs");
    let job = h.store.get(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running, "recorded while running");
    let checkpoint = first.event.checkpoint.as_ref().unwrap();
    assert!(checkpoint.model.contains(":ckpt-step-"), "{checkpoint:?}");

    h.manager.cancel(&id).await.unwrap();
    let ended = h.assert_one_terminal_event_last(&id, "cancelled").await;
    assert_eq!(ended, JobState::Cancelled);
    let log = h.log(&id).await;
    assert!(
        log.iter()
            .any(|e| e.event.checkpoint.as_ref() == Some(checkpoint)),
        "the cancelled job keeps its checkpoint"
    );
    // Ours, not also OpenAI's announcement of the same checkpoint.
    assert!(
        !log.iter()
            .any(|e| e.event.message.starts_with("Checkpoint created at step")),
        "one event per checkpoint"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_made_while_the_events_are_listed_still_come_before_the_end() {
    // 220 emulated seconds (validating 10, queued 10, 100 steps of 2) take 4.4 s at 50x;
    // the first checkpoint (step 80) is made 3.6 s after the start.
    let emulator = common::emulator(50.0).await;
    let h = harness(&emulator).await;
    let id = h.start("late-checkpoints").await;
    h.manager.poll_once(&id).await.unwrap();
    // The poller `start` spawned has listed its events too (so the slow page is ours).
    tokio::time::timeout(Duration::from_secs(30), async {
        while emulator.stats().count(EVENTS_ROUTE) < 2 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the start's own poll");
    // The next poll lists checkpoints long before the first one is made, then waits on a
    // slow events page until the job is over: every checkpoint is made between its two
    // requests, and the events it gets announce them all, then the end.
    emulator
        .faults()
        .inject(EVENTS_ROUTE, Fault::Latency { ms: 6_000 }, 1);
    h.manager.poll_once(&id).await.unwrap();
    while !h.manager.poll_once(&id).await.unwrap() {}
    h.assert_one_terminal_event_last(&id, "late checkpoints")
        .await;

    let log = h.log(&id).await;
    let completed = log
        .iter()
        .position(|e| e.event.message == "The job has successfully completed")
        .expect("OpenAI's completion message");
    let checkpoints: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event.kind == EventKind::Checkpoint)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(checkpoints.len(), 3, "every checkpoint, once");
    for &i in &checkpoints {
        let step = log[i].event.checkpoint.as_ref().unwrap().step;
        assert_eq!(
            log[i - 1].event.metrics.as_ref().map(|m| m.step),
            Some(step),
            "checkpoint {step} follows its step's metrics"
        );
        assert!(i < completed, "checkpoint {step} comes before the end");
    }
    emulator.shutdown().await;
}
