//! Crash safety: the real `finetune serve` killed with SIGKILL while jobs run and watchers
//! are attached, then restarted on the same data directory. Watchers that resume from
//! their last sequence must receive every remaining event exactly once; pollers must pick up
//! where they left off; a creation cut short by the kill must be adopted, not repeated; and
//! the SQLite store must open and answer after each kill.

use crate::common;
use crate::common::resume::{Seen, lazy_client, watch_across};

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use finetune::pb;
use finetune_emulator::Fault;

fn spawn_server(addr: &str, data_dir: &std::path::Path, base_url: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args(["serve", "--poll-interval-seconds", "0.1"])
        .args(["--heartbeat-seconds", "0.5", "--addr", addr])
        .arg("--data-dir")
        .arg(data_dir)
        .env("OPENAI_BASE_URL", base_url)
        .env("OPENAI_API_KEY", "sk-test-crash")
        .env("FINETUNE_UPSTREAM_RETRY_DELAY_MS", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::start_line(&mut child, None);
    child
}

fn kill(mut server: Child) {
    server.kill().unwrap(); // SIGKILL: no drain, no cleanup
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sigkills_mid_training_lose_and_repeat_no_event() {
    // Jobs of ~6 s at this scale: both kills land while they run.
    let emulator = common::emulator(40.0).await;
    let data_dir = tempfile::tempdir().unwrap();
    let addr = common::free_addr();
    let mut server = spawn_server(&addr, data_dir.path(), &emulator.base_url());

    let mut jobs = Vec::new();
    for i in 0..3 {
        let job = lazy_client(&addr)
            .start_training(common::StartTraining::new(&format!("crash-{i}")).build())
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        jobs.push(job.id);
    }
    let mut watchers = Vec::new();
    for job in &jobs {
        for _ in 0..2 {
            watchers.push((
                job.clone(),
                tokio::spawn(watch_across(vec![addr.clone()], 0, job.clone())),
            ));
        }
    }
    for pause in [1200, 1500] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        kill(server);
        tokio::time::sleep(Duration::from_millis(400)).await;
        server = spawn_server(&addr, data_dir.path(), &emulator.base_url());
        // The store opened after the kill and answers.
        let listed = lazy_client(&addr)
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs;
        assert_eq!(listed.len(), 3, "every job survived the kill");
    }

    let mut by_job: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for (job, watcher) in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(120), watcher)
            .await
            .expect("the watcher finished")
            .unwrap();
        by_job.entry(job).or_default().push(seen);
    }
    for (job, seen) in &by_job {
        // The log as the restarted server has it, from the first event.
        let full = watch_across(vec![addr.clone()], 0, job.clone()).await;
        assert_eq!(full.final_state, Some(pb::JobState::Succeeded), "{job}");
        let sequences: Vec<u64> = full.events.iter().map(|e| e.0).collect();
        assert_eq!(
            sequences,
            (1..=sequences.len() as u64).collect::<Vec<_>>(),
            "{job}: the stored log is gapless"
        );
        for watcher in seen {
            assert!(
                watcher.breaks >= 2,
                "{job}: the watcher lived through both kills"
            );
            assert_eq!(
                watcher.events, full.events,
                "{job}: every event exactly once, in order, as stored"
            );
        }
    }
    let upstream = common::upstream_jobs_by_request(&emulator).await;
    assert!(
        upstream.values().all(|jobs| jobs.len() == 1) && upstream.len() == 3,
        "no job created twice: {upstream:?}"
    );
    kill(server);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_cut_by_sigkill_is_adopted_after_the_restart() {
    let emulator = common::emulator(100.0).await;
    // OpenAI takes 1.5 s to answer the create: the server dies while it waits.
    emulator
        .faults()
        .inject("POST /v1/fine_tuning/jobs", Fault::Latency { ms: 1500 }, 1);
    let data_dir = tempfile::tempdir().unwrap();
    let addr = common::free_addr();
    let server = spawn_server(&addr, data_dir.path(), &emulator.base_url());
    let call_addr = addr.clone();
    let call = tokio::spawn(async move {
        lazy_client(&call_addr)
            .start_training(common::StartTraining::new("cut-creation").build())
            .await
    });
    // Kill once the create request is on its way.
    for _ in 0..200 {
        if emulator.stats().count("POST /v1/fine_tuning/jobs") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(emulator.stats().count("POST /v1/fine_tuning/jobs"), 1);
    kill(server);
    // The caller sees its call fail (tonic reports the broken connection as UNKNOWN or
    // UNAVAILABLE, depending on when it broke).
    let status = call.await.unwrap().unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        ),
        "{status:?}"
    );
    // Let OpenAI finish making the job the dead server asked for.
    tokio::time::sleep(Duration::from_millis(1700)).await;

    let server = spawn_server(&addr, data_dir.path(), &emulator.base_url());
    // The caller retries with the same request id, as it should after UNAVAILABLE.
    let job = lazy_client(&addr)
        .start_training(common::StartTraining::new("cut-creation").build())
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let seen = watch_across(vec![addr.clone()], 0, job.id.clone()).await;
    assert_eq!(seen.final_state, Some(pb::JobState::Succeeded));
    // Exactly one job upstream for the request id, and it is the one the service follows
    // (whether the create the dead server sent completed or not).
    let upstream = common::upstream_jobs_by_request(&emulator).await;
    assert_eq!(
        upstream.get("cut-creation"),
        Some(&vec![job.upstream_id.clone()]),
        "{upstream:?}"
    );
    assert_eq!(upstream.values().map(Vec::len).sum::<usize>(), 1);
    kill(server);
    emulator.shutdown().await;
}
