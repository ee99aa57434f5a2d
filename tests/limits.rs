//! The limits a caller can hit, each answered with RESOURCE_EXHAUSTED and a message naming
//! the setting: message size, watch streams, calls in flight per caller. (The dataset size
//! limit is in tests/grpc_api.rs.)

use crate::common;

use std::time::Duration;

use common::TestServer;
use finetune::auth::{Role, new_token};
use finetune::pb;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

fn validate(content: Vec<u8>) -> pb::ValidateDatasetRequest {
    pb::ValidateDatasetRequest {
        training: common::inline(content, "big.jsonl"),
        model: "gpt-4o-2024-08-06".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_names_the_limit_and_the_way_around_it() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 1 << 20).await;
    let status = server
        .client()
        .validate_dataset(validate(common::synthetic_dataset(2 << 20)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("1048576 bytes (--max-message-bytes)")
            && status.message().contains("UploadDataset"),
        "{}",
        status.message()
    );
    // Under the limit, the same call is answered.
    server
        .client()
        .validate_dataset(validate(common::sample_dataset()))
        .await
        .unwrap();
    server.stop().await;
}

async fn running_job(server: &TestServer) -> String {
    server
        .start_job(
            common::StartTraining::new("limits")
                .file_name("big.jsonl")
                .build(),
        )
        .await
        .id
}

fn watch(job_id: &str) -> pb::WatchJobRequest {
    pb::WatchJobRequest {
        job_id: job_id.into(),
        after_sequence: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_over_the_limit_are_refused_until_one_closes() {
    let server = TestServer::start_with(|c| {
        c.emulator = true;
        c.emulator_time_scale = 1.0; // the job runs for minutes: the streams stay open
        c.max_watch_streams = 2;
    })
    .await;
    let job = running_job(&server).await;
    let mut first = server
        .client()
        .watch_job(watch(&job))
        .await
        .unwrap()
        .into_inner();
    let mut second = server
        .client()
        .watch_job(watch(&job))
        .await
        .unwrap()
        .into_inner();
    // Both streams are live (their snapshots arrived).
    first.next().await.unwrap().unwrap();
    second.next().await.unwrap().unwrap();
    let status = server.client().watch_job(watch(&job)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("2 watch streams are open")
            && status.message().contains("--max-watch-streams"),
        "{}",
        status.message()
    );
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "LIMIT_EXCEEDED");
    assert_eq!(info.metadata["limit"], "--max-watch-streams");
    // Other calls are not affected by the watch limit.
    server
        .client()
        .get_job(pb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap();
    // Closing a stream frees its place.
    drop(first);
    let mut admitted = None;
    for _ in 0..100 {
        match server.client().watch_job(watch(&job)).await {
            Ok(stream) => {
                admitted = Some(stream);
                break;
            }
            Err(s) if s.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    assert!(
        admitted.is_some(),
        "a closed stream's place was never freed"
    );
    drop(second);
    drop(admitted);
    server.stop().await;
}

fn long_answer() -> pb::StreamCompleteRequest {
    pb::StreamCompleteRequest {
        request: Some(pb::CompleteRequest {
            model: "gpt-4o-mini".into(),
            ..common::ask(&"Write a long answer about ".repeat(30))
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_concurrency_limit_is_refused_and_others_are_not() {
    let (busy, busy_line) = new_token("busy", &[Role::Read, Role::Complete]);
    let (other, other_line) = new_token("other", &[Role::Read, Role::Complete]);
    let server = TestServer::start_with(move |c| {
        c.emulator = true;
        c.emulator_time_scale = 1.0; // 20 ms per token: streams stay open
        c.max_calls_per_caller = 2;
        c.auth_tokens = Some(format!("{busy_line}\n{other_line}"));
    })
    .await;
    // Two streamed answers in flight hold both of busy's places until they end.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut s = server
            .client()
            .stream_complete(common::authed(long_answer(), &busy))
            .await
            .unwrap()
            .into_inner();
        s.next().await.unwrap().unwrap();
        streams.push(s);
    }
    let status = server
        .client()
        .list_tiers(common::authed(pb::ListTiersRequest::default(), &busy))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("caller busy has 2 calls in flight")
            && status.message().contains("--max-calls-per-caller"),
        "{}",
        status.message()
    );
    // Another caller is served meanwhile.
    server
        .client()
        .list_tiers(common::authed(pb::ListTiersRequest::default(), &other))
        .await
        .unwrap();
    // When a stream ends (here: the caller drops it), busy is served again.
    streams.pop();
    let mut served = false;
    for _ in 0..100 {
        match server
            .client()
            .list_tiers(common::authed(pb::ListTiersRequest::default(), &busy))
            .await
        {
            Ok(_) => {
                served = true;
                break;
            }
            Err(s) if s.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    assert!(served, "the ended stream's place was never freed");
    drop(streams);
    server.stop().await;
}
