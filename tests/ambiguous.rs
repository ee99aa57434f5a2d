//! Ambiguous creates never lose or duplicate a job: a create or upload whose answer is lost
//! or unreadable, a caller whose deadline passes or who hangs up mid-creation, and several
//! calls racing with one request id. Each case ends with exactly one upstream job per
//! request id, tracked by the service, with a poller that takes it to SUCCEEDED; a caller
//! only ever retries what the SDKs retry (UNAVAILABLE, with the same request id) or calls
//! again with the same request id after its own deadline, as the README says.

use crate::common;

use std::time::Duration;

use common::TestServer;
use finetune::pb;
use finetune_emulator::{Emulator, Fault};
use tonic::Code;
use tonic_types::StatusExt;

const CREATE_JOB: &str = "POST /v1/fine_tuning/jobs";
const LIST_JOBS: &str = "GET /v1/fine_tuning/jobs";
const UPLOAD: &str = "POST /v1/files";
const KEY: &str = "sk-test-ambiguous-7c6b5a49";

/// A server on `emulator`, polling every 50 ms, settling stranded reservations every
/// 200 ms, with `retries` upstream retries (millisecond backoff).
async fn server_for(emulator: &Emulator, retries: usize) -> TestServer {
    let base = emulator.base_url();
    TestServer::start_with(move |c| {
        c.openai_base_url = Some(base);
        c.openai_api_key = Some(KEY.into());
        c.poll_interval_seconds = Some(0.05);
        c.reconcile_interval_seconds = 0.2;
        c.heartbeat_seconds = 0.2;
        c.upstream_max_retries = retries;
        c.upstream_retry_delay_ms = 5;
        c.upstream_retry_max_delay_ms = 20;
    })
    .await
}

/// The service's job for `request_id`, if it tracks one.
async fn tracked(server: &TestServer, request_id: &str) -> Option<pb::Job> {
    let jobs = server
        .client()
        .list_jobs(pb::ListJobsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    jobs.into_iter().find(|j| j.request_id == request_id)
}

/// Waits (at most a minute, to fail rather than hang) until the job `job_id` succeeds:
/// proof that its poller runs.
async fn until_succeeded(server: &TestServer, job_id: &str) -> pb::Job {
    for _ in 0..1200 {
        let job = server
            .client()
            .get_job(pb::GetJobRequest {
                job_id: job_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        if job.state() == pb::JobState::Succeeded {
            return job;
        }
        assert!(
            !matches!(job.state(), pb::JobState::Failed | pb::JobState::Cancelled),
            "{job:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {job_id} did not succeed within a minute: is its poller running?");
}

/// Exactly one upstream job holds `request_id`; the service tracks it, under `job_id`, and
/// its poller takes it to SUCCEEDED.
async fn exactly_one_tracked(
    emulator: &Emulator,
    server: &TestServer,
    request_id: &str,
) -> pb::Job {
    let upstream = common::upstream_jobs_by_request(emulator).await;
    let jobs = upstream.get(request_id).cloned().unwrap_or_default();
    assert_eq!(jobs.len(), 1, "{request_id}: upstream jobs {upstream:?}");
    let job = tracked(server, request_id)
        .await
        .unwrap_or_else(|| panic!("{request_id}: the service tracks no job"));
    assert_eq!(
        job.upstream_id, jobs[0],
        "{request_id}: tracks the job OpenAI made"
    );
    until_succeeded(server, &job.id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_create_response_is_adopted_not_released() {
    let emulator = common::emulator(1000.0).await;
    // With retries (production) and without: the retry's look-up, or the final settle,
    // finds the job the unreadable answer was about.
    for retries in [2, 0] {
        let server = server_for(&emulator, retries).await;
        let request_id = format!("malformed-{retries}");
        emulator
            .faults()
            .inject(CREATE_JOB, Fault::MalformedJson, 1);
        let job = server
            .start_job(common::StartTraining::new(&request_id).build())
            .await;
        assert!(!job.upstream_id.is_empty(), "{job:?}");
        exactly_one_tracked(&emulator, &server, &request_id).await;
        server.stop().await;
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_create_response_is_adopted_and_a_cut_request_is_made_again() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 0).await;
    // The job is made, then the connection is cut before the answer.
    emulator.faults().inject(CREATE_JOB, Fault::LostResponse, 1);
    let job = server
        .start_job(common::StartTraining::new("cut-after").build())
        .await;
    assert!(!job.upstream_id.is_empty(), "{job:?}");
    exactly_one_tracked(&emulator, &server, "cut-after").await;

    // The connection is cut before anything is made: known to be nothing, released, and
    // UNAVAILABLE, which the SDKs retry with the same request id.
    emulator
        .faults()
        .inject(CREATE_JOB, Fault::DropConnection, 1);
    let status = server
        .client()
        .start_training(common::StartTraining::new("cut-before").build())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        common::reason(&status),
        "UPSTREAM_UNAVAILABLE",
        "{status:?}"
    );
    assert!(tracked(&server, "cut-before").await.is_none(), "released");
    server
        .client()
        .start_training(common::StartTraining::new("cut-before").build())
        .await
        .unwrap();
    exactly_one_tracked(&emulator, &server, "cut-before").await;
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_that_cannot_be_confirmed_stays_reserved_until_settled() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 0).await;
    // The job is made but its answer is unreadable, and OpenAI's job list is down from
    // then on (the look-up before the create passes: the first matching rule wins), so the
    // service cannot tell: the caller is told to retry, and the request id stays reserved.
    let faults = emulator.faults();
    faults.inject(LIST_JOBS, Fault::Latency { ms: 0 }, 1);
    faults.inject(LIST_JOBS, Fault::Unavailable, 1000);
    faults.inject(CREATE_JOB, Fault::MalformedJson, 1);
    let status = server
        .client()
        .start_training(common::StartTraining::new("unknown").build())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        common::reason(&status),
        "UPSTREAM_OUTCOME_UNKNOWN",
        "{status:?}"
    );
    let retry = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a RetryInfo");
    assert!(retry > Duration::ZERO, "{retry:?}");
    let reserved = tracked(&server, "unknown").await.expect("still reserved");
    assert!(reserved.upstream_id.is_empty(), "{reserved:?}");
    // A retry while OpenAI still cannot tell gets the same answer and makes no new job.
    let again = server
        .client()
        .start_training(common::StartTraining::new("unknown").build())
        .await
        .unwrap_err();
    assert_eq!(
        common::reason(&again),
        "UPSTREAM_OUTCOME_UNKNOWN",
        "{again:?}"
    );
    assert_eq!(emulator.stats().count(CREATE_JOB), 1);

    // Once the list answers, the reconciler adopts the job without any call.
    emulator.faults().clear();
    for _ in 0..600 {
        let job = tracked(&server, "unknown").await.expect("still reserved");
        if !job.upstream_id.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = exactly_one_tracked(&emulator, &server, "unknown").await;
    assert_eq!(
        job.id, reserved.id,
        "the reservation was adopted, not replaced"
    );
    // And a retry now returns it.
    let again = server
        .start_job(common::StartTraining::new("unknown").build())
        .await;
    assert_eq!(again.id, job.id);
    assert_eq!(emulator.stats().count(CREATE_JOB), 1);
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_upload_response_is_found_not_uploaded_again() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 0).await;
    emulator.faults().inject(UPLOAD, Fault::LostResponse, 1);
    let job = server
        .start_job(common::StartTraining::new("lost-upload").build())
        .await;
    assert_eq!(
        emulator.stats().count(UPLOAD),
        1,
        "found, not uploaded again"
    );
    assert!(!job.upstream_id.is_empty(), "{job:?}");
    exactly_one_tracked(&emulator, &server, "lost-upload").await;
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_passing_mid_create_does_not_strand_the_request_id() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 2).await;
    emulator
        .faults()
        .inject(CREATE_JOB, Fault::Latency { ms: 3000 }, 1);
    let mut request = tonic::Request::new(common::StartTraining::new("deadline").build());
    request.set_timeout(Duration::from_secs(1));
    let status = server.client().start_training(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    // Called again with the same request id (no deadline): the answer is the job the
    // first call's creation made, as soon as it exists.
    let job = server
        .start_job(common::StartTraining::new("deadline").build())
        .await;
    assert!(!job.upstream_id.is_empty(), "{job:?}");
    assert_eq!(emulator.stats().count(CREATE_JOB), 1, "created once");
    let tracked = exactly_one_tracked(&emulator, &server, "deadline").await;
    assert_eq!(tracked.id, job.id);
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_mid_upload_does_not_stop_the_creation() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 2).await;
    emulator
        .faults()
        .inject(UPLOAD, Fault::Latency { ms: 2000 }, 1);
    let mut client = server.client();
    let call = tokio::spawn(async move {
        client
            .start_training(common::StartTraining::new("hang-up").build())
            .await
    });
    // Hang up once the upload has reached OpenAI.
    while emulator.stats().count(UPLOAD) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    // Nobody calls again: the creation finishes on its own.
    let mut job = None;
    for _ in 0..600 {
        job = tracked(&server, "hang-up")
            .await
            .filter(|j| !j.upstream_id.is_empty());
        if job.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = job.expect("the creation went on after the caller left");
    let settled = exactly_one_tracked(&emulator, &server, "hang-up").await;
    assert_eq!(settled.id, job.id);
    assert_eq!(emulator.stats().count(UPLOAD), 1);
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_with_one_request_id_on_several_connections_make_one_job() {
    const CALLS: usize = 8;
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 2).await;
    // A slow create keeps the first call in progress while the others arrive.
    emulator
        .faults()
        .inject(CREATE_JOB, Fault::Latency { ms: 500 }, 1);
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        calls.push(tokio::spawn(async move {
            pb::fine_tune_service_client::FineTuneServiceClient::new(channel)
                .start_training(common::StartTraining::new("concurrent").build())
                .await
        }));
    }
    let mut jobs = Vec::new();
    for call in calls {
        let job = call.await.unwrap().unwrap().into_inner().job.unwrap();
        assert!(!job.upstream_id.is_empty(), "{job:?}");
        jobs.push((job.id, job.upstream_id));
    }
    jobs.dedup();
    assert_eq!(jobs.len(), 1, "every call got the same job: {jobs:?}");
    assert_eq!(emulator.stats().count(CREATE_JOB), 1, "created once");
    let job = exactly_one_tracked(&emulator, &server, "concurrent").await;
    assert_eq!(job.id, jobs[0].0);
    server.stop().await;
    emulator.shutdown().await;
}
