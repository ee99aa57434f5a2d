//! Accepting a reviewed problem: a line whose string looks like a key blocks `finetune
//! validate`, `finetune train` and StartTraining until the caller accepts it
//! (`--accept possible_secret:LINE`, `accepted_problems`); the accepted problem stays in
//! the report, marked, the job records it and GetJob shows it. Codes that are OpenAI's
//! rules cannot be accepted.

use crate::common;

use std::path::Path;

use common::TestServer;
use finetune::pb;
use tonic_types::StatusExt;

/// A key-shaped sample (random characters, no account behind it).
fn sample_key() -> String {
    ["ghp_", "R2xkN8vQ4mT1pL7wZ3yB", "9cF6hJ0gD5sA2eK8"].concat()
}

/// The sample dataset with a key-shaped string in line 3's answer.
fn dataset_with_key() -> Vec<u8> {
    let sample = String::from_utf8(common::sample_dataset()).unwrap();
    let mut lines: Vec<String> = sample.lines().map(str::to_owned).collect();
    lines[2] = lines[2].replacen("```", &format!("// GITHUB_TOKEN={} ```", sample_key()), 1);
    (lines.join("\n") + "\n").into_bytes()
}

fn write_dataset(dir: &Path) -> String {
    let path = dir.join("with-key.jsonl");
    std::fs::write(&path, dataset_with_key()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn validate_reports_a_key_until_the_line_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_dataset(dir.path());

    let blocked = common::finetune(None, &["validate", &file]);
    assert_eq!(
        blocked.status.code(),
        Some(1),
        "{}",
        common::text(&blocked.stdout)
    );
    let report = common::text(&blocked.stdout);
    assert!(
        report.contains(":3: error[possible_secret]: messages[2].content:"),
        "{report}"
    );
    assert!(
        !report.contains(&sample_key()),
        "the key is never echoed: {report}"
    );

    let accepted = common::finetune(None, &["validate", &file, "--accept", "possible_secret:3"]);
    let report = common::text(&accepted.stdout);
    assert_eq!(accepted.status.code(), Some(0), "{report}");
    assert!(
        report.contains(":3: accepted error[possible_secret]: messages[2].content:"),
        "{report}"
    );
    assert!(report.contains("0 errors (1 more accepted)"), "{report}");

    // The same as JSON; a line that has no such problem accepts nothing.
    let json = common::finetune(
        None,
        &[
            "validate",
            &file,
            "--json",
            "--accept",
            "possible_secret:training:3",
            "--accept",
            "possible_secret:5",
        ],
    );
    assert_eq!(json.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["error_count"], 0);
    assert_eq!(v["accepted_count"], 1);
    assert_eq!(v["counts_by_code"]["possible_secret"], 1);
    let listed = &v["errors"][0];
    assert_eq!(listed["code"], "possible_secret");
    assert_eq!(listed["line"], 3);
    assert_eq!(listed["accepted"], true);

    // Another line's acceptance does not cover line 3.
    let other = common::finetune(None, &["validate", &file, "--accept", "possible_secret:4"]);
    assert_eq!(other.status.code(), Some(1));
}

#[test]
fn only_safe_codes_and_well_formed_acceptances_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_dataset(dir.path());
    for (accept, expect) in [
        (
            "invalid_json:3",
            "invalid_json cannot be accepted: only possible_secret can",
        ),
        ("too_few_examples:1", "cannot be accepted"),
        ("no_such_code:3", "unknown problem code \"no_such_code\""),
        ("possible_secret:0", "the line must be 1 or more"),
        ("possible_secret", "expected CODE:LINE"),
        ("possible_secret:test:3", "expected CODE:LINE"),
        (
            "possible_secret:validation:3",
            "names the validation file, but there is no --validation-file",
        ),
    ] {
        for command in [vec!["validate"], vec!["train", "--addr", "127.0.0.1:9"]] {
            let mut args = command.clone();
            args.extend([file.as_str(), "--accept", accept]);
            let out = common::finetune(None, &args);
            let command = command[0];
            let err = common::text(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} --accept {accept}: {err}"
            );
            assert!(err.contains(expect), "{command} --accept {accept}: {err}");
        }
    }
}

/// A server that trains against the emulator.
async fn server(emulator: &finetune_emulator::Emulator) -> TestServer {
    let base = emulator.base_url();
    TestServer::start_with(move |c| {
        c.openai_base_url = Some(base);
        c.openai_api_key = Some("sk-test-accepted".into());
        c.poll_interval_seconds = Some(0.05);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_starts_once_the_line_is_accepted_and_the_job_records_it() {
    let emulator = common::emulator(300.0).await;
    let server = server(&emulator).await;
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = write_dataset(dir.path());

    let run = |extra: &'static [&'static str]| {
        let (file, addr) = (file.clone(), addr.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["train", file.as_str(), "--yes", "--json"];
            args.extend_from_slice(extra);
            common::finetune(Some(&addr), &args)
        })
    };
    let refused = run(&["--request-id", "accept-cli-0"]).await.unwrap();
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        common::text(&refused.stderr)
    );
    assert!(common::text(&refused.stdout).contains("error[possible_secret]"));

    let started = run(&[
        "--request-id",
        "accept-cli-1",
        "--accept",
        "possible_secret:3",
    ])
    .await
    .unwrap();
    assert_eq!(
        started.status.code(),
        Some(0),
        "{}",
        common::text(&started.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&started.stdout).unwrap();
    assert_eq!(
        v["job"]["accepted_problems"],
        serde_json::json!(["possible_secret:training:3"])
    );
    let job_id = v["job"]["id"].as_str().unwrap().to_owned();

    // GetJob, through the CLI and over gRPC, shows what was accepted.
    let listed = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || common::finetune(Some(&addr), &["jobs", "--json"])
    })
    .await
    .unwrap();
    assert!(
        common::text(&listed.stdout).contains("possible_secret:training:3"),
        "{}",
        common::text(&listed.stdout)
    );
    let job = server
        .client()
        .get_job(pb::GetJobRequest { job_id })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(
        job.accepted_problems,
        vec![pb::AcceptedProblem {
            dataset: pb::DatasetRole::Training as i32,
            line: 3,
            code: "possible_secret".into(),
        }]
    );
    server.stop().await;
    emulator.shutdown().await;
}

/// StartTraining on the dataset with a key, accepting `accepted`.
fn start_request(request_id: &str, accepted: Vec<pb::AcceptedProblem>) -> pb::StartTrainingRequest {
    common::StartTraining::new(request_id)
        .dataset(dataset_with_key())
        .file_name("with-key.jsonl")
        .model("gpt-4o-mini")
        .accepted(accepted)
        .build()
}

fn secret_at(dataset: pb::DatasetRole, line: u32) -> pb::AcceptedProblem {
    pb::AcceptedProblem {
        dataset: dataset as i32,
        line,
        code: "possible_secret".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_training_takes_accepted_problems_and_refuses_unsafe_ones() {
    let emulator = common::emulator(300.0).await;
    let server = server(&emulator).await;
    let mut client = server.client();

    // Without acceptance: refused, the problem named.
    let refused = client
        .start_training(start_request("accept-grpc-0", vec![]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("possible_secret"), "{refused:?}");

    // ValidateDataset shows what would be accepted.
    let report = client
        .validate_dataset(pb::ValidateDatasetRequest {
            training: start_request("", vec![]).training,
            accepted_problems: vec![secret_at(pb::DatasetRole::Unspecified, 3)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!((report.error_count, report.accepted_count), (0, 1));
    let problem = report
        .problems
        .iter()
        .find(|p| p.code == "possible_secret")
        .unwrap();
    assert_eq!(
        (problem.code.as_str(), problem.line),
        ("possible_secret", 3)
    );
    assert!(problem.accepted);
    assert_eq!(problem.severity, pb::Severity::Error as i32);

    // Accepted (unspecified dataset means training): started, recorded, in the report.
    let accepted = vec![secret_at(pb::DatasetRole::Unspecified, 3)];
    let started = client
        .start_training(start_request("accept-grpc-1", accepted.clone()))
        .await
        .unwrap()
        .into_inner();
    let job = started.job.unwrap();
    assert_eq!(
        job.accepted_problems,
        vec![secret_at(pb::DatasetRole::Training, 3)]
    );
    let report = started.report.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.code == "possible_secret" && p.line == 3 && p.accepted)
    );
    let fetched = client
        .get_job(pb::GetJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(fetched.accepted_problems, job.accepted_problems);

    // The store keeps a row per acceptance beside the snapshot, for audits.
    let db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(server.data_dir.path().join("finetune.db"))
        .read_only(true);
    let mut conn = sqlx::ConnectOptions::connect(&db).await.unwrap();
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT job_id, dataset, line, code FROM job_accepted_problems ORDER BY job_id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![(
            job.id.clone(),
            "training".into(),
            3,
            "possible_secret".into()
        )]
    );

    // The acceptance is part of the request: the same id without it is another request.
    let again = client
        .start_training(start_request("accept-grpc-1", accepted))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.job.unwrap().id, job.id);
    let changed = client
        .start_training(start_request(
            "accept-grpc-1",
            vec![secret_at(pb::DatasetRole::Training, 4)],
        ))
        .await
        .unwrap_err();
    assert_eq!(changed.code(), tonic::Code::AlreadyExists);

    // Unsafe codes, line 0 and a validation file that is not there: INVALID_ARGUMENT
    // naming the entry.
    for (entry, field) in [
        (
            pb::AcceptedProblem {
                code: "invalid_json".into(),
                ..secret_at(pb::DatasetRole::Training, 3)
            },
            "accepted_problems[1].code",
        ),
        (
            secret_at(pb::DatasetRole::Training, 0),
            "accepted_problems[1].line",
        ),
        (
            secret_at(pb::DatasetRole::Validation, 3),
            "accepted_problems[1].dataset",
        ),
    ] {
        let request = start_request(
            "accept-grpc-2",
            vec![secret_at(pb::DatasetRole::Training, 3), entry],
        );
        let status = client.start_training(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let fields: Vec<String> = status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert_eq!(fields, vec![field.to_owned()], "{status:?}");
    }
    server.stop().await;
    emulator.shutdown().await;
}
