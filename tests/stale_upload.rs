//! A remembered upload is trusted only while OpenAI still has it: a dataset whose earlier
//! upload was deleted upstream, has expired or expires soon is uploaded again, the job
//! trains from the new file, and the job's events say what happened.

use crate::common;

use std::time::{Duration, Instant};

use common::TestServer;
use finetune::pb;
use finetune_core::store::Store as _;
use finetune_emulator::Emulator;
use finetune_store_sqlite::SqliteStore;

const KEY: &str = "sk-test-stale-upload-4e1f";

async fn server_for(emulator: &Emulator) -> TestServer {
    let base = emulator.base_url();
    TestServer::start_with(move |c| {
        c.openai_base_url = Some(base);
        c.openai_api_key = Some(KEY.into());
        c.poll_interval_seconds = Some(0.05);
        c.heartbeat_seconds = 0.2;
        c.upstream_retry_delay_ms = 5;
        c.upstream_retry_max_delay_ms = 20;
    })
    .await
}

/// The sample dataset without its `metadata` keys: uploaded as it is, so its SHA-256 is
/// the one the service remembers its upload by.
fn plain_dataset() -> Vec<u8> {
    let mut out = Vec::new();
    for line in String::from_utf8(common::sample_dataset()).unwrap().lines() {
        let mut example: serde_json::Value = serde_json::from_str(line).unwrap();
        example.as_object_mut().unwrap().remove("metadata");
        out.extend_from_slice(example.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Trains `content` to the end: the final job and the messages of its events.
async fn train(server: &TestServer, request_id: &str, content: Vec<u8>) -> (pb::Job, Vec<String>) {
    let job = server
        .start_job(
            common::StartTraining::new(request_id)
                .dataset(content)
                .build(),
        )
        .await;
    let items = server
        .watch_to_end(&job.id, 0, Duration::from_secs(120))
        .await;
    let events = common::events(&items);
    let messages: Vec<String> = events.iter().map(|e| e.message.clone()).collect();
    let job = events.into_iter().rev().find_map(|e| e.job).unwrap_or(job);
    assert_eq!(
        job.state(),
        pb::JobState::Succeeded,
        "{request_id}: {messages:#?}"
    );
    (job, messages)
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Uploads `content` straight to the emulator, as another tool (or an earlier run) would.
async fn upload_expiring(emulator: &Emulator, content: Vec<u8>, seconds: u32) -> String {
    let form = reqwest::multipart::Form::new()
        .text("purpose", "fine-tune")
        .text("expires_after[anchor]", "created_at")
        .text("expires_after[seconds]", seconds.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(content).file_name("data.jsonl"),
        );
    let file: serde_json::Value = http()
        .post(format!("{}/files", emulator.base_url()))
        .bearer_auth(KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = file["created_at"].as_i64().unwrap();
    assert_eq!(
        file["expires_at"].as_i64(),
        Some(created + i64::from(seconds)),
        "expires_after anchors on created_at: {file}"
    );
    file["id"].as_str().unwrap().to_owned()
}

async fn file_status(emulator: &Emulator, id: &str) -> reqwest::StatusCode {
    http()
        .get(format!("{}/files/{id}", emulator.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .status()
}

/// Makes the service remember `file_id` as the upload of `content`, as an earlier
/// StartTraining would have.
async fn remember(server: &TestServer, content: &[u8], file_id: &str) {
    // Answered once the server has opened (and migrated) its store.
    server
        .client()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap();
    let store = SqliteStore::open(&server.data_dir.path().join("finetune.db"))
        .await
        .unwrap();
    store
        .remember_upload(&common::sha256_hex(content), file_id)
        .await
        .unwrap();
}

fn note_of(messages: &[String], old: &str) -> String {
    messages
        .iter()
        .find(|m| m.contains(&format!("remembered upload {old}")))
        .unwrap_or_else(|| panic!("no event tells about {old}: {messages:#?}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_upstream_is_uploaded_again() {
    let emulator = common::emulator(1000.0).await;
    let server = server_for(&emulator).await;
    let (first, _) = train(&server, "before-delete", common::sample_dataset()).await;
    let old = first.training_file_id.clone();

    let deleted = http()
        .delete(format!("{}/files/{old}", emulator.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{deleted:?}");

    let (second, messages) = train(&server, "after-delete", common::sample_dataset()).await;
    assert_ne!(second.training_file_id, old, "a fresh upload");
    assert_eq!(
        file_status(&emulator, &second.training_file_id).await,
        reqwest::StatusCode::OK
    );
    let note = note_of(&messages, &old);
    assert!(note.contains("is gone upstream"), "{note}");
    assert!(note.contains(&second.training_file_id), "{note}");

    // The new upload is remembered and, still there, reused.
    let (third, messages) = train(&server, "reuse", common::sample_dataset()).await;
    assert_eq!(third.training_file_id, second.training_file_id);
    assert!(
        !messages.iter().any(|m| m.contains("remembered upload")),
        "{messages:#?}"
    );
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_file_is_refused_upstream_and_uploaded_again() {
    // An hour of emulated time passes in one real second.
    let emulator = common::emulator(3600.0).await;
    let server = server_for(&emulator).await;
    let content = plain_dataset();
    let old = upload_expiring(&emulator, content.clone(), 3600).await;
    remember(&server, &content, &old).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while file_status(&emulator, &old).await != reqwest::StatusCode::NOT_FOUND {
        assert!(Instant::now() < deadline, "{old} never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // OpenAI refuses to train from an expired file.
    let refused = http()
        .post(format!("{}/fine_tuning/jobs", emulator.base_url()))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model": "gpt-4o-mini-2024-07-18", "training_file": old}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["param"], "training_file", "{body}");

    let (job, messages) = train(&server, "after-expiry", content).await;
    assert_ne!(job.training_file_id, old);
    let note = note_of(&messages, &old);
    assert!(note.contains(&job.training_file_id), "{note}");
    server.stop().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_expires_soon_is_not_reused() {
    // The file outlives the test (2 h of emulated time are 6 real minutes at x20), but
    // expires within the day: a job could wait in OpenAI's queue longer than that.
    let emulator = common::emulator(20.0).await;
    let server = server_for(&emulator).await;
    let content = plain_dataset();
    let old = upload_expiring(&emulator, content.clone(), 7200).await;
    remember(&server, &content, &old).await;
    let (job, messages) = train(&server, "expires-soon", content).await;
    assert_ne!(job.training_file_id, old);
    assert_eq!(file_status(&emulator, &old).await, reqwest::StatusCode::OK);
    let note = note_of(&messages, &old);
    assert!(note.contains("expires at"), "{note}");
    assert!(note.contains(&job.training_file_id), "{note}");
    server.stop().await;
    emulator.shutdown().await;
}
