//! Replicas: three real `finetune serve` processes on one PostgreSQL database (a database
//! of their own on the server scripts/postgres.sh starts), in front of one emulator.
//! Jobs started on one replica are polled by exactly one replica at a time, taken over
//! when the holder is SIGKILLed, and watched to the end from the others, every event once
//! and in order; a promotion on one replica is served by another on its next request; A/B
//! users stick to their arm on every replica; and the statistics add up across them.

use crate::common;
use crate::common::postgres::TestDatabase;
use crate::common::resume::{Seen, lazy_client, watch_across};

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use finetune::pb;
use finetune::pb::fine_tune_service_client::FineTuneServiceClient;
use tonic::transport::{Channel, Endpoint};

const POLL_SECONDS: f64 = 0.5;
const LEASE_TTL_SECONDS: f64 = 1.5;

/// One replica: `finetune serve --database-url` on `addr`, with a data directory (its
/// dataset cache) of its own.
struct Replica {
    addr: String,
    child: Option<Child>,
    data_dir: tempfile::TempDir,
}

impl Replica {
    fn start(database_url: &str, emulator: &finetune_emulator::Emulator) -> Replica {
        let mut replica = Replica {
            addr: common::free_addr(),
            child: None,
            data_dir: tempfile::tempdir().unwrap(),
        };
        replica.restart(database_url, emulator);
        replica
    }

    fn restart(&mut self, database_url: &str, emulator: &finetune_emulator::Emulator) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_finetune"))
            .args(["serve", "--addr", &self.addr])
            .args(["--poll-interval-seconds", &POLL_SECONDS.to_string()])
            .args(["--lease-ttl-seconds", &LEASE_TTL_SECONDS.to_string()])
            .args(["--heartbeat-seconds", "0.5"])
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .env("FINETUNE_DATABASE_URL", database_url)
            .env("OPENAI_BASE_URL", emulator.base_url())
            .env("OPENAI_API_KEY", "sk-test-cluster")
            .env("ANTHROPIC_BASE_URL", emulator.anthropic_base_url())
            .env("ANTHROPIC_API_KEY", "sk-ant-test-cluster")
            .env("FINETUNE_UPSTREAM_RETRY_DELAY_MS", "20")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        common::start_line(&mut child, None);
        self.child = Some(child);
    }

    /// SIGKILL: no drain, no lease given up.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn client(&self) -> FineTuneServiceClient<Channel> {
        lazy_client(&self.addr)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_sigkilled_replicas_polled_once_and_watched_from_any() {
    // Jobs of ~12 s at this scale: the kills land while they run.
    let emulator = common::emulator(20.0).await;
    let db = TestDatabase::create().await;
    let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&db.url, &emulator)).collect();
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();

    // Started on replica 0, which then holds their leases and polls them.
    let mut jobs = Vec::new();
    for i in 0..3 {
        let job = replicas[0]
            .client()
            .start_training(common::StartTraining::new(&format!("cluster-{i}")).build())
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        jobs.push(job.id);
    }
    let mut watchers = Vec::new();
    for job in &jobs {
        for first in [1, 2] {
            watchers.push((
                job.clone(),
                tokio::spawn(watch_across(addrs.clone(), first, job.clone())),
            ));
        }
    }
    // Every replica reads the same jobs.
    for replica in &replicas {
        let listed = replica
            .client()
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs;
        assert_eq!(listed.len(), 3, "{}: every job", replica.addr);
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    replicas[0].kill();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    replicas[0].restart(&db.url, &emulator);
    replicas[1].kill();

    let mut by_job: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for (job, watcher) in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(120), watcher)
            .await
            .expect("the watcher finished")
            .unwrap();
        by_job.entry(job).or_default().push(seen);
    }
    for (job, seen) in &by_job {
        // The stored log, read whole from a replica that lived through it all.
        let full = watch_across(vec![addrs[2].clone()], 0, job.clone()).await;
        assert_eq!(full.final_state, Some(pb::JobState::Succeeded), "{job}");
        let sequences: Vec<u64> = full.events.iter().map(|e| e.0).collect();
        assert_eq!(
            sequences,
            (1..=sequences.len() as u64).collect::<Vec<_>>(),
            "{job}: the stored log is gapless"
        );
        for watcher in seen {
            assert_eq!(
                watcher.events, full.events,
                "{job}: every event exactly once, in order, as stored"
            );
        }
    }

    // From the emulator's side: one upstream job per request id, and each job read (a poll
    // starts with one) by one poller at a time, never left longer than the takeover bound.
    let upstream = common::upstream_jobs_by_request(&emulator).await;
    assert!(
        upstream.len() == 3 && upstream.values().all(|jobs| jobs.len() == 1),
        "no job created twice: {upstream:?}"
    );
    let reads = emulator.stats().job_reads;
    let bound_ms = (LEASE_TTL_SECONDS + 2.0 * POLL_SECONDS) * 1000.0;
    for ids in upstream.values() {
        let times: Vec<i64> = reads[&ids[0]].iter().copied().collect();
        let gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let (min, max) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
        eprintln!(
            "cluster: {}: {} polls, gaps {min}..{max} ms (takeover bound {bound_ms} ms)",
            ids[0],
            times.len()
        );
        // One poller waits a whole interval between its reads; two would interleave.
        assert!(
            *min as f64 >= POLL_SECONDS * 1000.0 * 0.75,
            "{}: polled twice within {min} ms: two pollers at once",
            ids[0]
        );
        // The bound, plus room for a loaded 2-core machine.
        assert!(
            (*max as f64) <= bound_ms + 1500.0,
            "{}: unpolled for {max} ms, over the takeover bound of {bound_ms} ms",
            ids[0]
        );
    }
    drop(replicas);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_arms_and_statistics_are_the_same_on_every_replica() {
    let emulator = common::emulator(20.0).await;
    let db = TestDatabase::create().await;
    let replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&db.url, &emulator)).collect();
    let complete = |replica: usize, tier: &str, user: &str| {
        let mut client = replicas[replica].client();
        let request = pb::CompleteRequest {
            tier: tier.to_owned(),
            user_id: user.to_owned(),
            ..common::ask("Say hi.")
        };
        async move {
            client
                .complete(request)
                .await
                .unwrap()
                .into_inner()
                .completion
                .unwrap()
        }
    };

    // A promotion through one replica is served by the next from its next request.
    for (round, model) in ["gpt-4o-mini", "gpt-4o", "gpt-4o-mini"].iter().enumerate() {
        let promoted_on = round % 3;
        replicas[promoted_on]
            .client()
            .promote_model(pb::PromoteModelRequest {
                tier: "fast".to_owned(),
                source: Some(pb::promote_model_request::Source::Model(
                    (*model).to_owned(),
                )),
            })
            .await
            .unwrap();
        let served = complete((promoted_on + 1) % 3, "fast", "").await;
        // OpenAI answers with the dated snapshot of an alias (gpt-4o-mini-2024-07-18).
        assert!(
            served.model == *model || served.model.starts_with(&format!("{model}-20")),
            "round {round}: {} served after promoting {model}",
            served.model
        );
    }

    // Users of the A/B split keep their arm on every replica.
    let mut arms = BTreeMap::new();
    let users = 60;
    for user in 0..users {
        let user = format!("user-{user}");
        let mut seen = Vec::new();
        for replica in 0..3 {
            seen.push(complete(replica, "auto", &user).await.arm);
        }
        assert!(seen.iter().all(|a| *a == seen[0]), "{user}: {seen:?}");
        *arms.entry(seen[0].clone()).or_insert(0) += 1;
    }
    assert_eq!(arms.len(), 2, "both arms serve someone: {arms:?}");

    // The served requests of all three add up, read from any of them.
    let served_total = 3 + users * 3;
    for replica in &replicas {
        let stats = replica
            .client()
            .get_tier_stats(pb::GetTierStatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .stats;
        let requests: u64 = stats.iter().map(|s| s.requests).sum();
        assert_eq!(requests, served_total as u64, "{}: {stats:?}", replica.addr);
    }
    drop(replicas);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_the_database_refuses_and_serving_once_it_is_back() {
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let emulator = common::emulator(20.0).await;
    let db = TestDatabase::create().await;
    let replica = Replica::start(&db.url, &emulator);
    let channel = Endpoint::from_shared(format!("http://{}", replica.addr))
        .unwrap()
        .connect_lazy();
    let mut health = HealthClient::new(channel);
    let mut until = async |want: ServingStatus, what: &str| {
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let status = health
                    .check(HealthCheckRequest {
                        service: finetune::server::SERVICE_NAME.to_owned(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .status;
                if status == want as i32 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("health never became {want:?} {what}"));
    };
    until(ServingStatus::Serving, "after the start").await;
    db.refuse_connections(true).await;
    until(ServingStatus::NotServing, "while the database refused").await;
    db.refuse_connections(false).await;
    until(ServingStatus::Serving, "once the database was back").await;
    drop(replica);
    db.drop().await;
}
