//! `finetune serve` as operators run it: the start line, health through shutdown,
//! JSON logs, and the bounded drain on SIGTERM.

use crate::common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

struct Served {
    child: Child,
    addr: String,
    start_line: String,
    _dir: tempfile::TempDir,
}

/// Starts the binary on an ephemeral port and reads the address from its start line.
fn spawn(extra_env: &[(&str, &str)]) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_finetune"));
    cmd.arg("serve")
        .env("FINETUNE_ADDR", "127.0.0.1:0")
        .env("FINETUNE_DATA_DIR", dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let start_line = common::start_line(&mut child, None);
    let addr = common::address_on(&start_line);
    Served {
        child,
        addr,
        start_line,
        _dir: dir,
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_health_to_not_serving_and_exits_cleanly() {
    let mut served = spawn(&[]);
    assert!(
        served
            .start_line
            .starts_with("finetune: listening on 127.0.0.1:"),
        "{}",
        served.start_line
    );
    assert!(
        served.start_line.contains("data dir"),
        "{}",
        served.start_line
    );

    let mut health = HealthClient::new(channel(&served.addr).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "fileengine.finetune.v1.FineTuneService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    terminate(&served.child);
    // Watchers learn of the shutdown before the connection closes.
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a status update");
    if let Some(Ok(update)) = next {
        assert_eq!(update.status, ServingStatus::NotServing as i32);
    }
    let status = wait_exit(&mut served.child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    let logs = stderr_of(&mut served.child);
    assert!(logs.contains("received SIGTERM"), "{logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_is_bounded_when_a_call_never_finishes() {
    let mut served = spawn(&[("FINETUNE_DRAIN_SECONDS", "1")]);
    let mut client = finetune::pb::fine_tune_service_client::FineTuneServiceClient::new(
        channel(&served.addr).await,
    );
    // An upload whose client never closes the stream keeps a call in flight.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(finetune::pb::UploadDatasetRequest {
        header: None,
        chunk: b"{}".to_vec(),
    })
    .await
    .unwrap();
    let call = tokio::spawn(async move {
        client
            .upload_dataset(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let began = Instant::now();
    terminate(&served.child);
    let status = wait_exit(&mut served.child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "it waited for the drain: {:?}",
        began.elapsed()
    );
    let logs = stderr_of(&mut served.child);
    assert!(logs.contains("drain timed out"), "{logs}");
    assert!(
        call.await.unwrap().is_err(),
        "the unfinished upload failed rather than being stored"
    );
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let mut served = spawn(&[("FINETUNE_LOG_FORMAT", "json")]);
    let mut health = HealthClient::new(channel(&served.addr).await);
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    terminate(&served.child);
    assert!(wait_exit(&mut served.child, Duration::from_secs(15)).success());
    let logs = stderr_of(&mut served.child);
    assert!(
        logs.contains("shutdown complete"),
        "an idle client does not hold up the shutdown: {logs}"
    );
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.len() >= 3, "{logs}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args(["serve", "--addr", &addr, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}
