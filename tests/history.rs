//! Reads do not mutate: GetJob, ListJobs and WatchJob of a job the store holds ask the
//! provider nothing, and a server started without a provider key serves the job history an
//! earlier run left, while what needs a provider (StartTraining, CancelJob, adopting a job
//! made outside the service) is FAILED_PRECONDITION with the reason PROVIDER_NOT_CONFIGURED.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{StartTraining, TestServer};
use finetune::pb;
use finetune::pb::fine_tune_service_client::FineTuneServiceClient;
use finetune::pb::watch_job_response::Item;
use finetune_emulator::Emulator;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

const GET_JOB: &str = "GET /v1/fine_tuning/jobs/{id}";

/// Long enough for an emulated job at x300 on a loaded 2-core machine.
const WITHIN: Duration = Duration::from_secs(60);

/// A server on `data_dir` that talks to `emulator` as OpenAI.
async fn server_for(emulator: &Emulator, data_dir: &Path) -> TestServer {
    let (base, data_dir) = (emulator.base_url(), data_dir.to_owned());
    TestServer::start_with(move |c| {
        c.data_dir = data_dir;
        c.openai_base_url = Some(base);
        c.openai_api_key = Some("sk-test-history".into());
        c.poll_interval_seconds = Some(0.05);
    })
    .await
}

/// Trains a job to its end; the job as stored then, and the events of its watch.
async fn train_to_the_end(server: &TestServer, request_id: &str) -> (pb::Job, Vec<pb::JobEvent>) {
    let job = server
        .start_job(StartTraining::new(request_id).build())
        .await;
    // The watch ends at the terminal event, which the poller writes after its last
    // request: from here on nothing asks the provider for this job.
    let events = common::events(&server.watch_to_end(&job.id, 0, WITHIN).await);
    let stored = get(&mut server.client(), &job.id).await.unwrap();
    assert_eq!(stored.state, pb::JobState::Succeeded as i32, "{stored:?}");
    (stored, events)
}

async fn get(
    client: &mut FineTuneServiceClient<Channel>,
    job_id: &str,
) -> Result<pb::Job, tonic::Status> {
    let response = client
        .get_job(pb::GetJobRequest {
            job_id: job_id.into(),
        })
        .await?;
    Ok(response
        .into_inner()
        .job
        .expect("GetJob answers with the job"))
}

/// The events of a WatchJob stream on `job_id` from the start, to its end.
async fn watched_events(
    client: &mut FineTuneServiceClient<Channel>,
    job_id: &str,
) -> Result<Vec<pb::JobEvent>, tonic::Status> {
    let mut stream = client
        .watch_job(pb::WatchJobRequest {
            job_id: job_id.into(),
            after_sequence: 0,
        })
        .await?
        .into_inner();
    let mut items = Vec::new();
    while let Some(item) = tokio::time::timeout(WITHIN, stream.next())
        .await
        .unwrap_or_else(|_| panic!("the watch of {job_id} did not end: {items:#?}"))
    {
        items.push(item?.item.expect("every watch item carries an item"));
    }
    assert!(
        matches!(items.first(), Some(Item::Snapshot(_))),
        "{items:#?}"
    );
    Ok(common::events(&items))
}

/// GetJob (by this service's id and OpenAI's), ListJobs and WatchJob answer with `job`,
/// the only job, and its `events`.
async fn assert_serves(
    client: &mut FineTuneServiceClient<Channel>,
    job: &pb::Job,
    events: &[pb::JobEvent],
) {
    for id in [&job.id, &job.upstream_id] {
        assert_eq!(&get(client, id).await.unwrap(), job, "GetJob {id}");
        assert_eq!(
            watched_events(client, id).await.unwrap(),
            events,
            "WatchJob {id}"
        );
    }
    let page = client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.jobs, std::slice::from_ref(job));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_stored_job_asks_the_provider_nothing() {
    let emulator = common::emulator(300.0).await;
    let data_dir = tempfile::tempdir().unwrap();
    let server = server_for(&emulator, data_dir.path()).await;
    let (job, events) = train_to_the_end(&server, "history-reads").await;
    let mut client = server.client();
    let before = emulator.stats();

    assert_serves(&mut client, &job, &events).await;
    let after = emulator.stats();
    assert_eq!(
        after.by_route, before.by_route,
        "reading a stored job made provider requests"
    );

    // An id the store does not hold is the one read that goes upstream: adopting it.
    let err = get(&mut client, "ftjob-made-nowhere").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(emulator.stats().count(GET_JOB), after.count(GET_JOB) + 1);
    server.stop().await;
    emulator.shutdown().await;
}

/// `finetune serve` on `data_dir` with no provider key in its environment; killed when
/// dropped.
struct KeylessServer {
    child: Child,
    addr: String,
}

impl KeylessServer {
    fn start(data_dir: &Path) -> KeylessServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_finetune"))
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("FINETUNE_EMULATOR")
            .env_remove("FINETUNE_DATABASE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = common::listening_address(&mut child);
        KeylessServer { child, addr }
    }

    async fn client(&self) -> FineTuneServiceClient<Channel> {
        FineTuneServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }
}

impl Drop for KeylessServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// FAILED_PRECONDITION saying that no provider is configured, and how to configure one.
fn assert_no_provider(err: &tonic::Status, what: &str) {
    assert_eq!(err.code(), Code::FailedPrecondition, "{what}: {err:?}");
    assert_eq!(common::reason(err), "PROVIDER_NOT_CONFIGURED", "{what}");
    assert!(
        err.message().contains("OPENAI_API_KEY"),
        "{what}: {}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_provider_key_serves_the_history_an_earlier_run_left() {
    let emulator = common::emulator(300.0).await;
    let data_dir = tempfile::tempdir().unwrap();
    let server = server_for(&emulator, data_dir.path()).await;
    let (job, events) = train_to_the_end(&server, "history-keyless").await;
    server.stop().await;
    let requests = emulator.stats().total;

    let keyless = KeylessServer::start(data_dir.path());
    let mut client = keyless.client().await;
    assert_serves(&mut client, &job, &events).await;

    let err = client
        .start_training(StartTraining::new("history-keyless-2").build())
        .await
        .unwrap_err();
    assert_no_provider(&err, "StartTraining");
    let err = client
        .cancel_job(pb::CancelJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap_err();
    assert_no_provider(&err, "CancelJob");
    // A job made outside the service can only be found by asking the provider.
    let err = get(&mut client, "ftjob-made-elsewhere").await.unwrap_err();
    assert_no_provider(&err, "GetJob of an outside id");
    let err = watched_events(&mut client, "ftjob-made-elsewhere")
        .await
        .unwrap_err();
    assert_no_provider(&err, "WatchJob of an outside id");
    // An id of this service's own form that the store lacks exists nowhere.
    let err = get(&mut client, "job-unknown").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(common::reason(&err), "JOB_NOT_FOUND");

    assert_eq!(emulator.stats().total, requests, "nothing reached OpenAI");
    drop(keyless);
    emulator.shutdown().await;
}
