//! The training lifecycle through the gRPC API against the emulator: StartTraining,
//! WatchJob (with resume), GetJob, ListJobs, CancelJob and idempotency.

use crate::common;

use common::TestServer;
use finetune::pb;
use finetune::pb::watch_job_response::Item;
use finetune_emulator::training_file;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

/// How long a job of these tests may take to the end of its watch.
const JOB_TIME: std::time::Duration = std::time::Duration::from_secs(60);

async fn emulated() -> TestServer {
    TestServer::start_with(|c| {
        c.emulator = true;
        c.emulator_time_scale = 400.0;
        c.poll_interval_seconds = Some(0.05);
        c.heartbeat_seconds = 0.3;
    })
    .await
}

fn start_request(request_id: &str) -> pb::StartTrainingRequest {
    common::StartTraining::new(request_id)
        .dataset(common::reference_dataset(
            "openai-dotnet_fine_tuning_sample.jsonl",
        ))
        .file_name("train.jsonl")
        .suffix("file-engine")
        .build()
}

/// The state changes of a watched log tell the job's lifecycle as a client follows it: each
/// state once, in order, starting with one VALIDATING_FILES; and RUNNING before the first
/// step's metrics or checkpoint, so a client that takes the job from its state changes never
/// shows a step of a job it believes validating or queued.
fn assert_states_in_order(evs: &[pb::JobEvent]) {
    let changes: Vec<(usize, i32)> = evs
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == pb::JobEventKind::StateChanged as i32)
        .map(|(i, e)| (i, e.job.as_ref().expect("a state change's snapshot").state))
        .collect();
    let states: Vec<pb::JobState> = changes
        .iter()
        .map(|(_, s)| pb::JobState::try_from(*s).unwrap())
        .collect();
    let log: Vec<String> = evs
        .iter()
        .map(|e| format!("#{} {}", e.sequence, e.message))
        .collect();
    assert_eq!(
        states.first(),
        Some(&pb::JobState::ValidatingFiles),
        "{states:?}\n{log:#?}"
    );
    // The enum's values follow the lifecycle (validating, queued, running, an end).
    assert!(
        changes.windows(2).all(|w| w[0].1 < w[1].1),
        "each state once, in order: {states:?}\n{log:#?}"
    );
    let running = changes
        .iter()
        .find(|(_, s)| *s == pb::JobState::Running as i32)
        .map(|(i, _)| *i)
        .expect("a RUNNING state change");
    let first_step = evs
        .iter()
        .position(|e| e.metrics.is_some() || e.checkpoint.is_some())
        .expect("steps");
    assert!(
        running < first_step,
        "RUNNING (#{}) comes before the first step (#{}):\n{log:#?}",
        evs[running].sequence,
        evs[first_step].sequence
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_success_and_the_watch_stream_tells_all() {
    let server = emulated().await;
    let started = server
        .client()
        .start_training(start_request("req-1"))
        .await
        .unwrap()
        .into_inner();
    let job = started.job.unwrap();
    assert!(job.id.starts_with("job-"));
    assert!(job.upstream_id.starts_with("ftjob-"), "{job:?}");
    assert_eq!(job.request_id, "req-1");
    let report = started.report.unwrap();
    assert_eq!(report.training.unwrap().examples, 10);
    assert!((job.estimated_cost_usd - report.estimated_cost_usd).abs() < 1e-12);
    assert_eq!(job.estimated_tokens, report.billed_tokens);

    let items = server.watch_to_end(&job.id, 0, JOB_TIME).await;
    assert!(
        matches!(items.first(), Some(Item::Snapshot(j)) if j.id == job.id),
        "the first item is the snapshot"
    );
    let evs = common::events(&items);
    let sequences: Vec<u64> = evs.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=evs.len() as u64).collect::<Vec<_>>(),
        "every event once, in order"
    );
    let last = evs.last().unwrap();
    assert_eq!(last.kind, pb::JobEventKind::StateChanged as i32);
    let done = last.job.clone().unwrap();
    assert_eq!(done.state, pb::JobState::Succeeded as i32);
    assert!(
        done.fine_tuned_model
            .starts_with("ft:gpt-4o-mini-2024-07-18:"),
        "{}",
        done.fine_tuned_model
    );
    assert!(done.fine_tuned_model.contains(":file-engine:"));
    // trained_tokens is what OpenAI (the emulator, by its own counting) reported for 10
    // epochs, not the estimate echoed back; the estimate stays beside it.
    let per_epoch = training_file::check_file(
        &common::reference_dataset("openai-dotnet_fine_tuning_sample.jsonl"),
        training_file::Method::Supervised,
        training_file::tokenizer_for("gpt-4o-mini-2024-07-18"),
        65_536,
    )
    .unwrap()
    .tokens_per_epoch;
    assert_eq!(done.trained_tokens, per_epoch * 10);
    assert_eq!(done.estimated_tokens, report.billed_tokens);
    assert_ne!(done.trained_tokens, done.estimated_tokens);
    assert!((done.actual_cost_usd - done.trained_tokens as f64 * 3.0 / 1e6).abs() < 1e-12);
    assert_eq!(done.last_sequence, last.sequence);
    assert_states_in_order(&evs);
    let metrics: Vec<&pb::StepMetrics> = evs.iter().filter_map(|e| e.metrics.as_ref()).collect();
    assert!(metrics.len() >= 10, "a metrics event per step");
    assert!(metrics.windows(2).all(|w| w[1].step > w[0].step));
    // Checkpoints come as they are made: each right after the metrics of its step, long
    // before the end, and once (not also as OpenAI's "Checkpoint created" message).
    let checkpoints: Vec<usize> = evs
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == pb::JobEventKind::Checkpoint as i32)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(checkpoints.len(), 3);
    for &i in &checkpoints {
        let step = evs[i].checkpoint.as_ref().unwrap().step;
        assert_eq!(
            evs[i - 1].metrics.as_ref().map(|m| m.step),
            Some(step),
            "checkpoint {step} follows its step's metrics"
        );
    }
    let completed = evs
        .iter()
        .position(|e| e.message == "The job has successfully completed")
        .expect("OpenAI's completion message");
    assert!(checkpoints.iter().all(|&i| i < completed));
    assert!(
        !evs.iter()
            .any(|e| e.message.starts_with("Checkpoint created at step")),
        "one event per checkpoint"
    );

    // Resume from the middle: exactly the rest.
    let middle = evs[evs.len() / 2].sequence;
    let rest = common::events(&server.watch_to_end(&job.id, middle, JOB_TIME).await);
    assert_eq!(
        rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        ((middle + 1)..=last.sequence).collect::<Vec<_>>()
    );
    // Resume after the end of a finished job: the snapshot, then the end.
    let after_end = server.watch_to_end(&job.id, last.sequence, JOB_TIME).await;
    assert_eq!(after_end.len(), 1);

    let got = server
        .client()
        .get_job(pb::GetJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(got.state, pb::JobState::Succeeded as i32);
    // OpenAI's id finds the same job.
    let by_upstream = server
        .client()
        .get_job(pb::GetJobRequest {
            job_id: job.upstream_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(by_upstream.into_inner().job.unwrap().id, job.id);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_never_starts_a_second_job() {
    let server = emulated().await;
    let first = server.start_job(start_request("req-dup")).await;
    let again = server
        .client()
        .start_training(start_request("req-dup"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.job.unwrap().id, first.id);
    assert!(again.report.is_none(), "a repeat is not validated again");

    let mut different = start_request("req-dup");
    different.suffix = "other".into();
    let err = server.client().start_training(different).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&first.id), "{}", err.message());
    let info = err.get_error_details().error_info().unwrap().clone();
    assert_eq!(info.reason, "REQUEST_ID_REUSED");
    assert_eq!(info.metadata["request_id"], "req-dup");
    assert_eq!(
        info.metadata["job_id"], first.id,
        "the job the request id started"
    );

    let listed = server
        .client()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.jobs.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_with_errors_is_refused_with_its_problems() {
    let server = emulated().await;
    let mut req = start_request("req-bad");
    req.training = common::inline(
        common::reference_dataset("toy_chat_fine_tuning.jsonl"),
        "train.jsonl",
    );
    let err = server.client().start_training(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let details = err.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "DATASET_INVALID");
    let violations = &details.precondition_failure().unwrap().violations;
    assert!(
        violations.iter().any(|v| v.r#type == "too_few_examples"),
        "{violations:?}"
    );
    let listed = server
        .client()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty(), "nothing was started");

    let mut dpo = start_request("req-dpo");
    dpo.method = pb::TrainingMethod::Dpo as i32;
    let err = server.client().start_training(dpo).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.get_error_details()
            .precondition_failure()
            .unwrap()
            .violations[0]
            .r#type
            == "method_format_mismatch"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_name_the_field() {
    let server = emulated().await;
    let mut req = start_request("");
    let err = server
        .client()
        .start_training(req.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "request_id"
    );
    req.request_id = "req-x".into();
    req.hyperparameters = Some(pb::Hyperparameters {
        n_epochs: Some(99),
        ..Default::default()
    });
    let err = server
        .client()
        .start_training(req.clone())
        .await
        .unwrap_err();
    assert_eq!(
        err.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "hyperparameters.n_epochs"
    );
    req.hyperparameters = None;
    req.metadata
        .insert("finetune_request_id".into(), "x".into());
    let err = server.client().start_training(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = server
        .client()
        .get_job(pb::GetJobRequest {
            job_id: "job-nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_job() {
    let server = TestServer::start_with(|c| {
        c.emulator = true;
        c.emulator_time_scale = 5.0;
        c.poll_interval_seconds = Some(0.05);
    })
    .await;
    let job = server.start_job(start_request("req-cancel")).await;
    let cancelled = server
        .client()
        .cancel_job(pb::CancelJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
    let items = server.watch_to_end(&job.id, 0, JOB_TIME).await;
    let last = common::events(&items).pop().unwrap();
    assert_eq!(last.job.unwrap().state, pb::JobState::Cancelled as i32);
    let err = server
        .client()
        .cancel_job(pb::CancelJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    server.stop().await;
}

#[tokio::test]
async fn without_a_provider_training_says_how_to_configure_one() {
    let server = TestServer::start().await;
    let err = server
        .client()
        .start_training(start_request("req"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("OPENAI_API_KEY") && err.message().contains("--emulator"),
        "{}",
        err.message()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_fill_silences_and_carry_the_last_sequence() {
    let server = TestServer::start_with(|c| {
        c.emulator = true;
        c.emulator_time_scale = 0.5; // validation alone takes emulated 10 s: long silences
        c.poll_interval_seconds = Some(0.1);
        c.heartbeat_seconds = 0.2;
    })
    .await;
    let job = server.start_job(start_request("req-quiet")).await;
    let mut stream = server.watch(&job.id, 0).await;
    let mut last_event = 0;
    let beat = loop {
        let item = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match item.item.unwrap() {
            Item::Event(e) => last_event = e.sequence,
            Item::Heartbeat(h) => break h,
            Item::Snapshot(_) => {}
        }
    };
    assert!(last_event >= 1);
    assert_eq!(beat.last_sequence, last_event);
    assert!(beat.time.is_some());
    server
        .client()
        .cancel_job(pb::CancelJobRequest { job_id: job.id })
        .await
        .unwrap();
    server.stop().await;
}
