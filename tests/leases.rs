//! Two processes on one store (two JobManagers over one database, each its own lease
//! holder): each job is polled by the one holding its lease, the other takes the jobs over
//! when the holder dies, and one request id makes one upstream job whichever of them the
//! calls reach.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use finetune_core::dataset::Catalog;
use finetune_core::domain::job::{JobState, Method};
use finetune_core::error::Error;
use finetune_core::jobs::{DatasetFile, JobManager, JobsConfig, StartRequest};
use finetune_core::ports::{
    FineTuning, NewJob, Page, PreparedUpload, RemoteCheckpoint, RemoteEvent, RemoteFile, RemoteJob,
    RetryPolicy, UpstreamError,
};
use finetune_core::store::{DatasetStore, Store};
use finetune_emulator::Emulator;
use finetune_providers::OpenAiConfig;
use finetune_providers::openai::OpenAi;
use finetune_store_sqlite::SqliteStore;
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_millis(100);
const LEASE_TTL: Duration = Duration::from_millis(400);

/// The OpenAI adapter, counting the job reads (the polls) it makes per upstream job.
struct Counting {
    inner: Box<dyn FineTuning>,
    polls: Mutex<HashMap<String, u64>>,
}

impl Counting {
    fn polls(&self, upstream_id: &str) -> u64 {
        self.polls
            .lock()
            .unwrap()
            .get(upstream_id)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl FineTuning for Counting {
    fn is_job_id(&self, id: &str) -> bool {
        self.inner.is_job_id(id)
    }
    async fn upload_file(&self, path: &Path, filename: &str) -> Result<RemoteFile, UpstreamError> {
        self.inner.upload_file(path, filename).await
    }
    async fn list_files(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<RemoteFile>, UpstreamError> {
        self.inner.list_files(after, limit).await
    }
    async fn get_file(&self, id: &str) -> Result<RemoteFile, UpstreamError> {
        self.inner.get_file(id).await
    }
    async fn create_job(&self, job: &NewJob) -> Result<RemoteJob, UpstreamError> {
        self.inner.create_job(job).await
    }
    async fn get_job(&self, id: &str) -> Result<RemoteJob, UpstreamError> {
        *self.polls.lock().unwrap().entry(id.to_owned()).or_default() += 1;
        self.inner.get_job(id).await
    }
    async fn list_jobs(
        &self,
        after: Option<&str>,
        limit: u32,
        metadata: &[(String, String)],
    ) -> Result<Page<RemoteJob>, UpstreamError> {
        self.inner.list_jobs(after, limit, metadata).await
    }
    async fn cancel_job(&self, id: &str) -> Result<RemoteJob, UpstreamError> {
        self.inner.cancel_job(id).await
    }
    async fn list_events(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<RemoteEvent>, UpstreamError> {
        self.inner.list_events(id, after, limit).await
    }
    async fn list_checkpoints(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<RemoteCheckpoint>, UpstreamError> {
        self.inner.list_checkpoints(id, after, limit).await
    }
    async fn prepare_upload(
        &self,
        path: &Path,
        sha256: &str,
        scratch: &Path,
    ) -> Result<PreparedUpload, Error> {
        self.inner.prepare_upload(path, sha256, scratch).await
    }
}

/// One "process": a manager with its own provider counter and shutdown token.
struct Process {
    manager: Arc<JobManager>,
    provider: Arc<Counting>,
    kill: CancellationToken,
}

fn process(emulator: &Emulator, store: &Arc<SqliteStore>, dir: &Path) -> Process {
    let provider = Arc::new(Counting {
        inner: Box::new(
            OpenAi::new(OpenAiConfig {
                retry: RetryPolicy::none(),
                ..OpenAiConfig::new("sk-test-leases", emulator.base_url())
            })
            .unwrap(),
        ),
        polls: Mutex::default(),
    });
    let kill = CancellationToken::new();
    let manager = JobManager::new(
        store.clone(),
        provider.clone(),
        Arc::new(Catalog::builtin()),
        DatasetStore::open(dir).unwrap(),
        JobsConfig {
            poll_interval: POLL,
            lease_ttl: LEASE_TTL,
            ..JobsConfig::default()
        },
        kill.clone(),
    );
    Process {
        manager,
        provider,
        kill,
    }
}

fn request(request_id: &str, dir: &Path) -> StartRequest {
    let bytes = common::sample_dataset();
    let path = dir.join("sample.jsonl");
    std::fs::write(&path, &bytes).unwrap();
    StartRequest {
        request_id: request_id.to_owned(),
        training: DatasetFile {
            path,
            sha256: common::sha256_hex(&bytes),
            name: "sample.jsonl".to_owned(),
        },
        validation: None,
        model: "gpt-4o-mini".to_owned(),
        method: Method::Supervised,
        hyperparameters: Default::default(),
        suffix: None,
        seed: None,
        metadata: Default::default(),
        accepted: Vec::new(),
    }
}

async fn shared_store(dir: &Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(&dir.join("jobs.db")).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_job_is_polled_by_its_lease_holder_and_taken_over_when_the_holder_dies() {
    // Jobs that take a few seconds, so both processes are up while they run.
    let emulator = common::emulator(60.0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path()).await;
    let a = process(&emulator, &store, dir.path());
    let b = process(&emulator, &store, dir.path());

    let mut jobs = Vec::new();
    for i in 0..3 {
        let started = a
            .manager
            .start(request(&format!("lease-{i}"), dir.path()))
            .await
            .unwrap();
        jobs.push(started.job);
    }
    // B starts beside A: it finds every job's lease held, so it polls none of them.
    b.manager.resume().await.unwrap();
    let _keeper = b.manager.spawn_lease_keeper();
    tokio::time::sleep(POLL * 6).await;
    for job in &jobs {
        let upstream = job.upstream_id.as_deref().unwrap();
        assert!(a.provider.polls(upstream) >= 2, "A polls {upstream}");
        assert_eq!(b.provider.polls(upstream), 0, "B leaves {upstream} to A");
    }

    // A dies without giving its leases up: B takes the jobs over once they lapse.
    a.kill.cancel();
    for job in &jobs {
        let stored = store.get(&job.id).await.unwrap().unwrap();
        assert!(
            !stored.state.is_terminal(),
            "{} still runs when A dies",
            job.id
        );
    }
    let a_polls: Vec<u64> = jobs
        .iter()
        .map(|j| a.provider.polls(j.upstream_id.as_deref().unwrap()))
        .collect();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let mut done = true;
            for job in &jobs {
                let stored = store.get(&job.id).await.unwrap().unwrap();
                done &= stored.state == JobState::Succeeded;
            }
            if done {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .expect("B finishes every job A started");
    for (job, before) in jobs.iter().zip(a_polls) {
        let upstream = job.upstream_id.as_deref().unwrap();
        assert!(b.provider.polls(upstream) > 0, "B took {upstream} over");
        assert_eq!(
            a.provider.polls(upstream),
            before,
            "a dead process polls nothing"
        );
    }
    b.manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_id_on_two_processes_at_once_makes_one_upstream_job() {
    let emulator = common::emulator(20.0).await;
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path()).await;
    let a = process(&emulator, &store, dir.path());
    let b = process(&emulator, &store, dir.path());
    for round in 0..20 {
        let id = format!("race-{round}");
        let (on_a, on_b) = tokio::join!(
            a.manager.start(request(&id, dir.path())),
            b.manager.start(request(&id, dir.path())),
        );
        let (on_a, on_b) = (on_a.unwrap(), on_b.unwrap());
        assert_eq!(on_a.job.id, on_b.job.id, "round {round}: one job");
        assert_eq!(on_a.job.upstream_id, on_b.job.upstream_id, "round {round}");
    }
    let upstream = common::upstream_jobs_by_request(&emulator).await;
    for round in 0..20 {
        let id = format!("race-{round}");
        assert_eq!(
            upstream.get(&id).map(Vec::len),
            Some(1),
            "{id}: exactly one upstream job, got {:?}",
            upstream.get(&id)
        );
    }
    a.manager.stop().await;
    b.manager.stop().await;
}
