//! The gRPC API through real tonic clients: health, reflection, ValidateDataset,
//! UploadDataset and the clear UNIMPLEMENTED answers of RPCs not built yet.

use crate::common;

use common::{TestServer, sample_dataset, sha256_hex, synthetic_dataset};
use finetune::pb;
use finetune::pb::dataset_source::Source;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt;

fn by_id(id: &str) -> Option<pb::DatasetSource> {
    Some(pb::DatasetSource {
        source: Some(Source::DatasetId(id.into())),
        file_name: String::new(),
    })
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel.clone());
    for service in ["", finetune::server::SERVICE_NAME] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_and_describe_the_service() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start().await;

    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let requests = tokio_stream::iter(vec![
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "fileengine.finetune.v1.FineTuneService".into(),
                ),
            ),
        },
        // The error details every status carries, so a generic client can decode them.
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "google.rpc.ErrorInfo".into(),
                ),
            ),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileByFilename(
                    "google/rpc/status.proto".into(),
                ),
            ),
        },
    ]);
    let mut responses = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let list = responses.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        list.message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "fileengine.finetune.v1.FineTuneService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let file = responses.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(fd)) =
        file.message_response
    else {
        panic!("expected a file descriptor");
    };
    use prost::Message;
    let descriptor =
        prost_types::FileDescriptorProto::decode(fd.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(descriptor.package(), "fileengine.finetune.v1");
    let methods: Vec<&str> = descriptor.service[0]
        .method
        .iter()
        .map(|m| m.name())
        .collect();
    assert_eq!(
        methods,
        [
            "ValidateDataset",
            "UploadDataset",
            "StartTraining",
            "GetJob",
            "ListJobs",
            "CancelJob",
            "WatchJob",
            "Complete",
            "StreamComplete",
            "ListTiers",
            "PromoteModel",
            "RecordFeedback",
            "GetTierStats"
        ]
    );

    let mut google_rpc = Vec::new();
    for _ in 0..2 {
        let file = responses.next().await.unwrap().unwrap();
        let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(fd)) =
            file.message_response
        else {
            panic!("expected a google.rpc file descriptor: {file:?}");
        };
        let files: Vec<prost_types::FileDescriptorProto> = fd
            .file_descriptor_proto
            .iter()
            .map(|f| prost_types::FileDescriptorProto::decode(f.as_slice()).unwrap())
            .collect();
        google_rpc.push(files[0].clone());
    }
    assert_eq!(google_rpc[0].name(), "google/rpc/error_details.proto");
    let messages: Vec<&str> = google_rpc[0]
        .message_type
        .iter()
        .map(|m| m.name())
        .collect();
    for want in [
        "ErrorInfo",
        "BadRequest",
        "PreconditionFailure",
        "RetryInfo",
    ] {
        assert!(messages.contains(&want), "{want} missing from {messages:?}");
    }
    assert_eq!(google_rpc[1].name(), "google/rpc/status.proto");
    assert_eq!(google_rpc[1].message_type[0].name(), "Status");

    // Older clients (grpcurl before 1.9) speak only v1alpha.
    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let requests = tokio_stream::iter(vec![v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    }]);
    let first = alpha
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(ref l))
            if l.service.iter().any(|s| s.name == "fileengine.finetune.v1.FineTuneService")
    ));
    server.stop().await;
}

#[tokio::test]
async fn validates_the_sample_dataset_inline() {
    let server = TestServer::start().await;
    let report = server
        .client()
        .validate_dataset(pb::ValidateDatasetRequest {
            training: common::inline(sample_dataset(), "training-data.jsonl"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(report.format, pb::DatasetFormat::Chat as i32);
    assert_eq!(report.model, "gpt-4o-2024-08-06");
    let training = report.training.unwrap();
    assert_eq!(training.examples, 13);
    assert_eq!(report.error_count, 0);
    assert_eq!(
        (report.epochs, report.epochs_source),
        (7, pb::EpochsSource::Auto as i32)
    );
    let tokens = training.tokens.unwrap();
    assert_eq!(tokens.encoding, "o200k_base");
    assert_eq!(report.billed_tokens, tokens.total * 7);
    assert!((report.estimated_cost_usd - report.billed_tokens as f64 * 25.0 / 1e6).abs() < 1e-9);
    assert_eq!(report.intents[0].intent, "generate_code");
    assert_eq!(report.intents[0].examples, 4);
    server.stop().await;
}

#[tokio::test]
async fn problems_come_back_with_lines_paths_and_counts() {
    let server = TestServer::start().await;
    let data = b"{\"messages\": [{\"role\": \"bot\", \"content\": \"hi\"}]}\nnot json\n".to_vec();
    let report = server
        .client()
        .validate_dataset(pb::ValidateDatasetRequest {
            training: common::inline(data, "bad.jsonl"),
            model: "gpt-3.5-turbo".into(),
            epochs: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(report.model, "gpt-3.5-turbo-0125");
    assert_eq!(
        (report.epochs, report.epochs_source),
        (2, pb::EpochsSource::Requested as i32)
    );
    let role = report
        .problems
        .iter()
        .find(|p| p.code == "unrecognized_role")
        .unwrap();
    assert_eq!(
        (role.line, role.path.as_str(), role.severity),
        (1, "messages[0].role", pb::Severity::Error as i32)
    );
    let json = report
        .problems
        .iter()
        .find(|p| p.code == "invalid_json")
        .unwrap();
    assert_eq!(json.line, 2);
    assert!(
        report
            .counts_by_code
            .iter()
            .any(|c| c.code == "too_few_examples" && c.count == 1)
    );
    assert!(report.error_count >= 3);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let server = TestServer::start().await;
    let mut client = server.client();
    let err = client
        .validate_dataset(pb::ValidateDatasetRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = err.get_error_details();
    assert_eq!(
        details.bad_request().unwrap().field_violations[0].field,
        "training"
    );
    assert_eq!(details.error_info().unwrap().reason, "INVALID_ARGUMENT");

    let err = client
        .validate_dataset(pb::ValidateDatasetRequest {
            training: by_id("../etc/passwd"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "training.dataset_id"
    );

    let err = client
        .validate_dataset(pb::ValidateDatasetRequest {
            training: by_id(&"0".repeat(64)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let info = err.get_error_details().error_info().unwrap().clone();
    assert_eq!(info.reason, "DATASET_NOT_FOUND");
    assert_eq!(info.metadata["dataset_id"], "0".repeat(64));

    let err = client
        .validate_dataset(pb::ValidateDatasetRequest {
            training: common::inline(sample_dataset(), ""),
            epochs: Some(51),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("epochs"), "{}", err.message());
    server.stop().await;
}

#[tokio::test]
async fn inline_datasets_beyond_tonics_default_4mb_are_accepted() {
    let server = TestServer::start().await;
    let data = synthetic_dataset(10 << 20);
    let report = server
        .client()
        .validate_dataset(pb::ValidateDatasetRequest {
            training: common::inline(data, "big.jsonl"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(report.error_count, 0, "{:?}", report.problems);
    assert!(report.training.unwrap().size_bytes >= 10 << 20);
    server.stop().await;
}

fn upload_stream(
    data: &[u8],
    header: Option<pb::UploadDatasetHeader>,
    chunk: usize,
) -> impl tokio_stream::Stream<Item = pb::UploadDatasetRequest> + use<> {
    let mut messages: Vec<pb::UploadDatasetRequest> = data
        .chunks(chunk)
        .map(|c| pb::UploadDatasetRequest {
            header: None,
            chunk: c.to_vec(),
        })
        .collect();
    if messages.is_empty() {
        messages.push(pb::UploadDatasetRequest::default());
    }
    messages[0].header = header;
    tokio_stream::iter(messages)
}

#[tokio::test]
async fn uploads_a_large_dataset_in_chunks_then_validates_it_by_id() {
    let server = TestServer::start().await;
    let mut client = server.client();
    let data = synthetic_dataset(40 << 20);
    let sha = sha256_hex(&data);
    let header = pb::UploadDatasetHeader {
        file_name: "big.jsonl".into(),
        sha256: sha.clone(),
        size_bytes: data.len() as u64,
    };
    let stored = client
        .upload_dataset(upload_stream(&data, Some(header), 1 << 20))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.dataset_id, sha);
    assert_eq!(stored.size_bytes, data.len() as u64);
    assert!(!stored.already_present);
    let on_disk = server
        .data_dir
        .path()
        .join("datasets")
        .join(format!("{sha}.jsonl"));
    assert_eq!(
        std::fs::metadata(&on_disk).unwrap().len(),
        data.len() as u64
    );

    // The same bytes in other chunk sizes get the same id and are not stored twice.
    let again = client
        .upload_dataset(upload_stream(&data, None, 3 << 20))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.dataset_id, sha);
    assert!(again.already_present);

    let report = client
        .validate_dataset(pb::ValidateDatasetRequest {
            training: by_id(&sha),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    let training = report.training.unwrap();
    assert_eq!(training.sha256, sha);
    assert_eq!(
        training.lines,
        data.iter().filter(|&&b| b == b'\n').count() as u64
    );
    assert_eq!(report.error_count, 0);
    server.stop().await;
}

#[tokio::test]
async fn an_upload_that_does_not_match_its_header_stores_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client();
    let data = sample_dataset();
    let wrong_sha = pb::UploadDatasetHeader {
        sha256: "ab".repeat(32),
        ..Default::default()
    };
    let err = client
        .upload_dataset(upload_stream(&data, Some(wrong_sha), 4096))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);
    assert!(
        err.message().contains("nothing was stored"),
        "{}",
        err.message()
    );

    let wrong_size = pb::UploadDatasetHeader {
        size_bytes: 5,
        ..Default::default()
    };
    let err = client
        .upload_dataset(upload_stream(&data, Some(wrong_size), 4096))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);

    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir.path().join("datasets"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    server.stop().await;
}

#[tokio::test]
async fn uploads_over_the_limit_are_refused_with_the_limit_named() {
    let server = TestServer::start_with(|c| c.max_dataset_bytes = 1000).await;
    let err = server
        .client()
        .upload_dataset(upload_stream(&sample_dataset(), None, 512))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("--max-dataset-bytes"),
        "{}",
        err.message()
    );
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir.path().join("datasets"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    server.stop().await;
}

/// The ErrorInfo of a NOT_FOUND: its reason and metadata.
fn not_found(err: tonic::Status) -> (String, std::collections::HashMap<String, String>) {
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let info = err.get_error_details().error_info().unwrap().clone();
    (info.reason, info.metadata)
}

#[tokio::test]
async fn not_found_errors_name_what_is_missing_in_their_metadata() {
    // With providers (the emulator), so each RPC gets as far as looking the name up.
    let server = TestServer::start_with(|c| c.emulator = true).await;
    let mut client = server.client();
    let job = |id: &str| {
        (
            "JOB_NOT_FOUND".to_owned(),
            [("job_id".to_owned(), id.to_owned())].into(),
        )
    };

    let err = client
        .get_job(pb::GetJobRequest {
            job_id: "job-nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_found(err), job("job-nope"));
    // Not an OpenAI id either, so not looked up there.
    let err = client
        .cancel_job(pb::CancelJobRequest {
            job_id: "nope-either".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_found(err), job("nope-either"));
    // An OpenAI id is looked up there, and OpenAI does not know it either.
    let err = client
        .get_job(pb::GetJobRequest {
            job_id: "ftjob-nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_found(err), job("ftjob-nope"));
    // A watch fails before its stream starts.
    let err = client
        .watch_job(pb::WatchJobRequest {
            job_id: "job-nope".into(),
            after_sequence: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(not_found(err), job("job-nope"));

    let err = client
        .get_tier_stats(pb::GetTierStatsRequest {
            tier: "fastest".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        not_found(err),
        (
            "TIER_NOT_FOUND".to_owned(),
            [("tier".to_owned(), "fastest".to_owned())].into()
        )
    );

    let err = client
        .record_feedback(pb::RecordFeedbackRequest {
            response_id: "resp-nope".into(),
            rating: pb::Rating::Up as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(
        not_found(err),
        (
            "RESPONSE_NOT_FOUND".to_owned(),
            [("response_id".to_owned(), "resp-nope".to_owned())].into()
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn without_providers_serving_says_how_to_configure_one() {
    let server = TestServer::start().await;
    let request = pb::CompleteRequest {
        tier: "pro".into(),
        ..common::ask("hi")
    };
    let err = server.client().complete(request).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("ANTHROPIC_API_KEY") && err.message().contains("--emulator"),
        "{}",
        err.message()
    );
    assert_eq!(
        err.get_error_details().error_info().unwrap().reason,
        "PROVIDER_NOT_CONFIGURED"
    );
    server.stop().await;
}
