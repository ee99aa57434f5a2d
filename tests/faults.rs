//! The fault matrix: each upstream failure the emulator can inject, and the outcome a
//! caller of the service relies on (the gRPC code and message, no duplicate job, no lost or
//! repeated watch event, a streamed answer that ends in an error rather than silently
//! short). Then a randomized run of 1,000 StartTraining calls under mixed faults that must
//! end with exactly one upstream job per answered request id and none for a refused one.
//! (The ambiguous-create cases, one by one, are in tests/ambiguous.rs.)
//!
//! The server retries as in production (2 retries, the provider's Retry-After honoured)
//! but with millisecond backoff, so the matrix runs in seconds.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestServer;
use finetune::pb;
use finetune::pb::stream_complete_response::Item as StreamItem;
use finetune::pb::watch_job_response::Item as WatchItem;
use finetune_emulator::{Emulator, Fault};
use rand::{Rng, SeedableRng};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

const CHAT: &str = "POST /v1/chat/completions";
const CREATE_JOB: &str = "POST /v1/fine_tuning/jobs";
const LIST_JOBS: &str = "GET /v1/fine_tuning/jobs";
const UPLOAD: &str = "POST /v1/files";
const LIST_FILES: &str = "GET /v1/files";
const KEY: &str = "sk-test-faults-5f4e3d2c1b";

/// A server on `emulator` with production retries (2) but millisecond backoff.
async fn server_for(emulator: &Emulator, poll: f64) -> TestServer {
    let base = emulator.base_url();
    TestServer::start_with(move |c| {
        c.openai_base_url = Some(base);
        c.openai_api_key = Some(KEY.into());
        c.poll_interval_seconds = Some(poll);
        c.heartbeat_seconds = 0.2;
        c.upstream_retry_delay_ms = 5;
        c.upstream_retry_max_delay_ms = 20;
    })
    .await
}

fn ask() -> pb::CompleteRequest {
    pb::CompleteRequest {
        model: "gpt-4o-mini".into(),
        ..common::ask("Build me a landing page with a dark theme")
    }
}

/// Asks `ask()` and checks the answer and its price.
async fn answered(server: &TestServer) {
    let answer = server.client().complete(ask()).await.unwrap();
    let answer = answer.into_inner().completion.unwrap();
    common::prices::assert_cost(&answer, "gpt-4o-mini", false);
}

/// The sample dataset with its first example's question made unique by `n`, so the
/// content (and so the upload) differs.
fn variant(n: usize) -> Vec<u8> {
    let sample = common::sample_dataset();
    let text = String::from_utf8(sample).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    let mut example: serde_json::Value = serde_json::from_str(first).unwrap();
    let messages = example["messages"].as_array_mut().unwrap();
    let user = messages.iter_mut().find(|m| m["role"] == "user").unwrap();
    let question = format!("{} (variant {n})", user["content"].as_str().unwrap());
    user["content"] = question.into();
    format!("{example}\n{rest}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_persistent_ones_reported_with_their_code() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 60.0).await;
    let faults = emulator.faults();
    let cases: [(&str, Fault, Code, &str); 4] = [
        (
            "429",
            Fault::RateLimit { retry_after_ms: 50 },
            Code::ResourceExhausted,
            "UPSTREAM_RATE_LIMITED",
        ),
        (
            "500",
            Fault::ServerError,
            Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
        ),
        (
            "503",
            Fault::Unavailable,
            Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
        ),
        (
            "connection reset",
            Fault::DropConnection,
            Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
        ),
    ];
    for (name, fault, code, why) in cases {
        // Twice: the two retries absorb it and the caller sees an answer.
        emulator.faults().reset_stats();
        faults.inject(CHAT, fault.clone(), 2);
        let answer = server.client().complete(ask()).await;
        assert!(answer.is_ok(), "{name} x2: {answer:?}");
        let answer = answer.unwrap().into_inner().completion.unwrap();
        common::prices::assert_cost(&answer, "gpt-4o-mini", false);
        assert_eq!(emulator.stats().count(CHAT), 3, "{name} x2: three attempts");

        // Three times: out of retries; the caller gets the code and the count.
        emulator.faults().reset_stats();
        faults.inject(CHAT, fault.clone(), 3);
        let status = server.client().complete(ask()).await.unwrap_err();
        assert_eq!(status.code(), code, "{name} x3: {status:?}");
        assert_eq!(common::reason(&status), why, "{name} x3");
        assert!(
            status.message().contains("gave up after 3 attempts"),
            "{name} x3: {}",
            status.message()
        );
        assert_eq!(
            emulator.stats().count(CHAT),
            3,
            "{name} x3: no fourth attempt"
        );
        if name == "429" {
            let retry = status.get_details_retry_info().expect("RetryInfo on a 429");
            assert!(retry.retry_delay.is_some());
        }
    }
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_is_waited_for_before_the_retry() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 60.0).await;
    emulator.faults().inject(
        CHAT,
        Fault::RateLimit {
            retry_after_ms: 400,
        },
        1,
    );
    let started = Instant::now();
    answered(&server).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "answered after {:?}, before the 400 ms the provider asked for",
        started.elapsed()
    );
    assert_eq!(emulator.stats().count(CHAT), 2);
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_past_the_callers_deadline_ends_at_the_deadline() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 60.0).await;
    emulator
        .faults()
        .inject(CHAT, Fault::Latency { ms: 5000 }, 1);
    let mut request = tonic::Request::new(ask());
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = server.client().complete(request).await.unwrap_err();
    // The server answers DEADLINE_EXCEEDED; tonic's client may give up on its own timer
    // first (CANCELLED, "Timeout expired"). Either way the caller is not kept waiting.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}, not at the deadline",
        started.elapsed()
    );
    // The server is not stuck: the next call is answered.
    answered(&server).await;
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_is_started_that_would_end_past_the_callers_deadline() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 60.0).await;
    // OpenAI asks for 2 s; the caller has 1 s. Waiting would only end in a bare deadline
    // error, so the server reports the rate limit at once.
    emulator.faults().inject(
        CHAT,
        Fault::RateLimit {
            retry_after_ms: 2000,
        },
        1,
    );
    let mut request = tonic::Request::new(ask());
    request.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let status = server.client().complete(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(emulator.stats().count(CHAT), 1);
    // Without a deadline the same fault is waited out and answered.
    emulator.faults().inject(
        CHAT,
        Fault::RateLimit {
            retry_after_ms: 200,
        },
        1,
    );
    answered(&server).await;
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_an_internal_error_and_not_retried() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 60.0).await;
    emulator.faults().inject(CHAT, Fault::MalformedJson, 1);
    let status = server.client().complete(ask()).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(common::reason(&status), "UPSTREAM_PROTOCOL_ERROR");
    assert!(
        status.message().contains("unreadable response"),
        "{}",
        status.message()
    );
    assert_eq!(
        emulator.stats().count(CHAT),
        1,
        "a broken body is not retried"
    );
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_midway_ends_with_an_error_not_silently_short() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 60.0).await;
    for abort in [false, true] {
        emulator.faults().inject(
            CHAT,
            Fault::TruncateStream {
                after_chunks: 2,
                abort,
            },
            1,
        );
        let mut stream = server
            .client()
            .stream_complete(pb::StreamCompleteRequest {
                request: Some(ask()),
            })
            .await
            .unwrap()
            .into_inner();
        let mut deltas = 0;
        let end = loop {
            match stream.next().await {
                Some(Ok(item)) => match item.item {
                    Some(StreamItem::Delta(_)) => deltas += 1,
                    Some(StreamItem::Completion(c)) => {
                        panic!("abort={abort}: a cut stream completed: {c:?}")
                    }
                    None => {}
                },
                Some(Err(status)) => break status,
                None => panic!("abort={abort}: the stream ended OK without a completion"),
            }
        };
        if !abort {
            assert!(deltas > 0, "the text before the cut arrived");
        }
        assert_eq!(end.code(), Code::Unavailable, "abort={abort}: {end:?}");
        assert!(
            stream.next().await.is_none(),
            "abort={abort}: nothing after the error"
        );
    }
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_create_and_upload_responses_never_duplicate_anything() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator, 60.0).await;
    let faults = emulator.faults();
    // The upload is stored, then its response is lost; then the same for the job.
    faults.inject(UPLOAD, Fault::LostResponse, 1);
    faults.inject(CREATE_JOB, Fault::LostResponse, 1);
    let started = server
        .client()
        .start_training(common::StartTraining::new("lost-responses").build())
        .await
        .unwrap()
        .into_inner();
    let job = started.job.unwrap();
    let stats = emulator.stats();
    assert_eq!(
        stats.count(UPLOAD),
        1,
        "the file was found, not uploaded again"
    );
    assert_eq!(
        stats.count(CREATE_JOB),
        1,
        "the job was found, not created again"
    );
    let jobs = common::upstream_jobs_by_request(&emulator).await;
    assert_eq!(
        jobs.get("lost-responses").map(Vec::len),
        Some(1),
        "{jobs:?}"
    );
    assert_eq!(
        Some(&job.upstream_id),
        jobs["lost-responses"].first(),
        "the service adopted the job that was made"
    );
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_rides_out_an_upstream_outage_without_losing_an_event() {
    // A job of ~10 s at this scale; the outage covers a good part of it.
    let emulator = common::emulator(60.0).await;
    let server = server_for(&emulator, 0.05).await;
    let job = server
        .start_job(common::StartTraining::new("outage").build())
        .await;
    let mut stream = server.watch(&job.id, 0).await;
    let mut sequences = Vec::new();
    let mut heartbeats_during_outage = 0;
    let mut outage_started = false;
    let mut last_state = pb::JobState::Unspecified;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("the watch stream went silent: no event or heartbeat for 60 s")
    {
        match item.expect("the stream stays OK through the outage").item {
            Some(WatchItem::Event(e)) => {
                sequences.push(e.sequence);
                if let Some(j) = e.job {
                    last_state = j.state();
                }
                if !outage_started && sequences.len() >= 3 {
                    // 3 s of 503s on every route: ~60 polls fail in a row.
                    emulator.faults().upstream_down(Duration::from_secs(3));
                    outage_started = true;
                }
            }
            Some(WatchItem::Heartbeat(_)) if emulator.faults().down_remaining().is_some() => {
                heartbeats_during_outage += 1;
            }
            _ => {}
        }
    }
    assert!(outage_started);
    assert!(
        heartbeats_during_outage > 0,
        "the watcher heard heartbeats during the outage"
    );
    assert_eq!(last_state, pb::JobState::Succeeded);
    let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
    assert_eq!(sequences, expected, "every event once, in order");
    server.stop().await;
    emulator.shutdown().await;
}

/// 1,000 StartTraining calls, 4 at a time, with a fault injected before about half of them
/// on one of the routes creation uses (among them unreadable and cut create answers, which
/// leave a job behind); the caller retries exactly what the SDKs retry (UNAVAILABLE, at
/// most 6 attempts, as the strictest SDK) with the same request id. Every request must end
/// with one job, tracked and exactly one at OpenAI, or with a rate-limit refusal that left
/// no job anywhere; never with an error that hides a job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_randomized_start_training_calls_make_one_job_each() {
    const CALLS: usize = 1000;
    const CONCURRENCY: usize = 4;
    let emulator = common::emulator(1.0).await;
    // Pollers stay quiet: this test is about creation.
    let server = Arc::new(server_for(&emulator, 3600.0).await);
    let faults = emulator.faults();
    let seed: u64 = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("FAULTS_SEED={seed}");
    let rng = Arc::new(std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(
        seed,
    )));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let injected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client_retries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let refused = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (server, faults, rng, next, injected, client_retries, refused) = (
            server.clone(),
            faults.clone(),
            rng.clone(),
            next.clone(),
            injected.clone(),
            client_retries.clone(),
            refused.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= CALLS {
                    return ids;
                }
                let request_id = format!("random-{i:04}");
                // One in ten gets content of its own, so uploads happen (and fail) too.
                let dataset = if i % 10 == 0 {
                    variant(i)
                } else {
                    common::sample_dataset()
                };
                let fault = {
                    let mut rng = rng.lock().unwrap();
                    rng.random_bool(0.5).then(|| {
                        let route = [CREATE_JOB, CREATE_JOB, LIST_JOBS, UPLOAD, LIST_FILES]
                            [rng.random_range(0..5)];
                        let fault = match rng.random_range(0..7) {
                            0 => Fault::RateLimit { retry_after_ms: 10 },
                            1 => Fault::ServerError,
                            2 => Fault::Unavailable,
                            3 => Fault::DropConnection,
                            4 | 5 => Fault::LostResponse,
                            _ => Fault::MalformedJson,
                        };
                        (route, fault, rng.random_range(1..=3u32))
                    })
                };
                if let Some((route, fault, times)) = fault {
                    faults.inject(route, fault, times);
                    injected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                let mut attempt = 0;
                let job = loop {
                    attempt += 1;
                    match server
                        .client()
                        .start_training(
                            common::StartTraining::new(&request_id)
                                .dataset(dataset.clone())
                                .build(),
                        )
                        .await
                    {
                        Ok(r) => break Some(r.into_inner().job.unwrap()),
                        Err(status) if attempt < 6 && status.code() == Code::Unavailable => {
                            client_retries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        // A rate limit that outlasted the server's retries: a clean
                        // refusal, checked below to have left no job anywhere.
                        Err(status) if status.code() == Code::ResourceExhausted => break None,
                        Err(status) => panic!("{request_id}, attempt {attempt}: {status:?}"),
                    }
                };
                let Some(job) = job else {
                    refused.lock().unwrap().push(request_id);
                    continue;
                };
                assert!(!job.upstream_id.is_empty(), "{request_id}: {job:?}");
                ids.push((request_id, job.id, job.upstream_id));
            }
        }));
    }
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    faults.clear();
    let refused = std::mem::take(&mut *refused.lock().unwrap());
    assert_eq!(results.len() + refused.len(), CALLS);

    let upstream = common::upstream_jobs_by_request(&emulator).await;
    let mut duplicates = Vec::new();
    for (request_id, _, upstream_id) in &results {
        let jobs = upstream.get(request_id).cloned().unwrap_or_default();
        if jobs.len() != 1 {
            duplicates.push((request_id.clone(), jobs.clone()));
        } else {
            assert_eq!(&jobs[0], upstream_id, "{request_id}: adopted the right job");
        }
    }
    assert!(
        duplicates.is_empty(),
        "request ids without exactly one upstream job: {duplicates:?}"
    );
    for request_id in &refused {
        assert!(
            !upstream.contains_key(request_id),
            "{request_id} was refused but OpenAI holds {:?}",
            upstream[request_id]
        );
    }
    let total: usize = upstream.values().map(Vec::len).sum();
    assert_eq!(total, results.len(), "no job outside the answered requests");
    let service_ids: HashSet<_> = results.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(
        service_ids.len(),
        results.len(),
        "one service job per request id"
    );
    let mut tracked = 0;
    let mut page_token = String::new();
    loop {
        let page = server
            .client()
            .list_jobs(pb::ListJobsRequest {
                page_size: 100,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for job in &page.jobs {
            assert!(!job.upstream_id.is_empty(), "a job left creating: {job:?}");
            assert!(
                !refused.contains(&job.request_id),
                "a refused request is tracked: {job:?}"
            );
        }
        tracked += page.jobs.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(tracked, results.len(), "the service tracks every job, once");
    println!(
        "{CALLS} StartTraining calls, {} with a fault injected, {} client retries, {} answered with a job, {} refused (rate limit, no job), {} upstream requests, {:.1} s",
        injected.load(std::sync::atomic::Ordering::SeqCst),
        client_retries.load(std::sync::atomic::Ordering::SeqCst),
        results.len(),
        refused.len(),
        emulator.stats().total,
        elapsed.as_secs_f64()
    );
    Arc::try_unwrap(server).ok().unwrap().stop().await;
    emulator.shutdown().await;
}
