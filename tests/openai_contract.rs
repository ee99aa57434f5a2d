//! Contract of the OpenAI adapter against OpenAI's own artefacts:
//!
//! * every response recorded from the real API by the official .NET SDK
//!   (`reference/recorded/openai-dotnet`) is replayed by a local server and
//!   decoded through the adapter's real code path, errors included;
//! * every request body the adapter builds validates against the request schemas of
//!   the OpenAPI spec (`reference/openai-openapi-finetuning.yaml`), and the
//!   validator is shown to reject broken bodies.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::spec::{spec, validator, validator_for_schema, violations};
use finetune_core::ports::UpstreamError;
use finetune_providers::OpenAiConfig;
use finetune_providers::openai::OpenAi;
use finetune_providers::types::{
    AutoOr, AutoTag, CreateJobRequest, Hyperparameters, Method, MethodParams,
};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "sk-test-contract-4f1b9c2d7e";

fn adapter(server: &MockServer) -> OpenAi {
    let mut config = OpenAiConfig::new(KEY, format!("{}/v1", server.uri()));
    config.organization = Some("org-test".into());
    config.project = Some("proj_test".into());
    OpenAi::new(config).expect("adapter")
}

// ---------------------------------------------------------------------------------------
// Recorded traffic
// ---------------------------------------------------------------------------------------

struct Entry {
    /// `FineTuningClientTests/AllParameters.json#0`.
    name: String,
    method: String,
    uri: reqwest::Url,
    request_body: Value,
    status: u16,
    headers: serde_json::Map<String, Value>,
    body: Value,
}

fn recorded_entries() -> Vec<Entry> {
    let root = common::repo_file("reference").join("recorded/openai-dotnet");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for item in std::fs::read_dir(&dir).expect("recorded dir") {
            let p = item.expect("dir entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut entries = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("recording");
        let doc: Value = serde_json::from_str(&text).expect("recording is JSON");
        let rel = file.strip_prefix(&root).unwrap().display().to_string();
        for (i, e) in doc["Entries"]
            .as_array()
            .expect("Entries")
            .iter()
            .enumerate()
        {
            entries.push(Entry {
                name: format!("{rel}#{i}"),
                method: e["RequestMethod"].as_str().unwrap().to_owned(),
                uri: e["RequestUri"].as_str().unwrap().parse().unwrap(),
                request_body: e["RequestBody"].clone(),
                status: u16::try_from(e["StatusCode"].as_u64().unwrap()).unwrap(),
                headers: e["ResponseHeaders"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                body: e["ResponseBody"].clone(),
            });
        }
    }
    entries
}

/// The recorded response, as the real server sent it: status, headers (less the
/// framing ones the replay server computes itself) and body.
fn replay(entry: &Entry) -> ResponseTemplate {
    let mut template = ResponseTemplate::new(entry.status);
    let mut content_type = "application/json".to_owned();
    for (name, value) in &entry.headers {
        match name.to_ascii_lowercase().as_str() {
            "content-length" | "connection" | "transfer-encoding" | "keep-alive" => continue,
            "content-type" => {
                content_type = value.as_str().unwrap().to_owned();
                continue;
            }
            _ => {}
        }
        let values: Vec<&str> = match value {
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            Value::String(s) => vec![s.as_str()],
            _ => Vec::new(),
        };
        for v in values {
            template = template.append_header(name.as_str(), v);
        }
    }
    let body = match &entry.body {
        // A recorded SSE stream is an array of raw event strings.
        Value::Array(events) if content_type.starts_with("text/event-stream") => events
            .iter()
            .filter_map(Value::as_str)
            .collect::<String>()
            .into_bytes(),
        body => serde_json::to_vec(body).unwrap(),
    };
    template.set_body_raw(body, &content_type)
}

/// What the adapter decoded, reduced to what can be compared with the raw JSON.
#[derive(Debug)]
enum Decoded {
    Job {
        id: String,
        status: String,
        failed: bool,
    },
    Page {
        len: usize,
        has_more: bool,
        ids: Vec<String>,
    },
    File {
        id: String,
        bytes: u64,
    },
    Upload {
        id: String,
        status: String,
        file: Option<String>,
    },
    Part {
        id: String,
    },
}

/// The adapter call that produces a recorded entry's request, and where it lands.
enum Call {
    CreateJob(Box<CreateJobRequest>),
    ListJobs {
        after: Option<String>,
        limit: u32,
    },
    CancelJob(String),
    GetJob(String),
    Events {
        id: String,
        after: Option<String>,
        limit: u32,
    },
    Checkpoints {
        id: String,
        after: Option<String>,
        limit: u32,
    },
    GetFile(String),
    UploadFile,
    CreateUpload {
        filename: String,
        bytes: u64,
    },
    AddPart(String),
    Complete {
        id: String,
        part_ids: Vec<String>,
    },
    CancelUpload(String),
}

fn query(url: &reqwest::Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A recorded create request as the service's own `CreateJobRequest`.
fn job_request(body: &Value) -> CreateJobRequest {
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    CreateJobRequest {
        model: text("model").unwrap(),
        training_file: text("training_file").unwrap(),
        validation_file: text("validation_file"),
        suffix: text("suffix"),
        seed: body.get("seed").and_then(Value::as_i64),
        method: body
            .get("method")
            .map(|m| serde_json::from_value(m.clone()).expect("recorded method")),
        metadata: body
            .get("metadata")
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default(),
    }
}

/// Maps a recorded request to the adapter call making it and the (method, path) its
/// response is served at; `None` for successes of endpoints this adapter never calls.
fn call_for(entry: &Entry) -> Option<(String, String, Call)> {
    let segments: Vec<String> = entry
        .uri
        .path_segments()
        .unwrap()
        .skip(1) // "v1"
        .map(str::to_owned)
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let after = query(&entry.uri, "after");
    let limit = |default| {
        query(&entry.uri, "limit")
            .map(|l| l.parse().unwrap())
            .unwrap_or(default)
    };
    let call = match (entry.method.as_str(), seg.as_slice()) {
        ("POST", ["fine_tuning", "jobs"]) => {
            Call::CreateJob(Box::new(job_request(&entry.request_body)))
        }
        ("GET", ["fine_tuning", "jobs"]) => Call::ListJobs {
            after,
            limit: limit(20),
        },
        ("GET", ["fine_tuning", "jobs", id]) => Call::GetJob((*id).to_owned()),
        ("POST", ["fine_tuning", "jobs", id, "cancel"]) => Call::CancelJob((*id).to_owned()),
        ("GET", ["fine_tuning", "jobs", id, "events"]) => Call::Events {
            id: (*id).to_owned(),
            after,
            limit: limit(20),
        },
        ("GET", ["fine_tuning", "jobs", id, "checkpoints"]) => Call::Checkpoints {
            id: (*id).to_owned(),
            after,
            limit: limit(10),
        },
        ("GET", ["files", id]) => Call::GetFile((*id).to_owned()),
        ("POST", ["files"]) => Call::UploadFile,
        ("POST", ["uploads"]) => Call::CreateUpload {
            filename: entry.request_body["filename"]
                .as_str()
                .unwrap_or("train.jsonl")
                .to_owned(),
            bytes: entry.request_body["bytes"].as_u64().unwrap_or(8),
        },
        ("POST", ["uploads", id, "parts"]) => Call::AddPart((*id).to_owned()),
        ("POST", ["uploads", id, "complete"]) => Call::Complete {
            id: (*id).to_owned(),
            part_ids: entry.request_body["part_ids"]
                .as_array()
                .map(|a| a.iter().map(|p| p.as_str().unwrap().to_owned()).collect())
                .unwrap_or_else(|| vec!["part_a".into(), "part_b".into()]),
        },
        ("POST", ["uploads", id, "cancel"]) => Call::CancelUpload((*id).to_owned()),
        // Chat completions, models and file deletion are not part of this adapter. Their
        // error bodies use the same envelope as every endpoint, so a recorded error is
        // still replayed, on the job endpoint; their successes are skipped.
        _ if entry.status >= 400 => {
            return Some((
                "GET".to_owned(),
                "/v1/fine_tuning/jobs/ftjob-replayed-error".to_owned(),
                Call::GetJob("ftjob-replayed-error".to_owned()),
            ));
        }
        _ => return None,
    };
    Some((entry.method.clone(), entry.uri.path().to_owned(), call))
}

async fn perform(api: &OpenAi, call: Call, dir: &Path) -> Result<Decoded, UpstreamError> {
    let job = |j: finetune_providers::types::Job| Decoded::Job {
        failed: j.failure().is_some(),
        id: j.id,
        status: j.status,
    };
    let upload = |u: finetune_providers::types::UploadObject| Decoded::Upload {
        id: u.id,
        status: u.status,
        file: u.file.map(|f| f.id),
    };
    let sample = dir.join("sample.jsonl");
    std::fs::write(&sample, b"{\"messages\":[]}\n").unwrap();
    Ok(match call {
        Call::CreateJob(request) => job(api.create_job(&request).await?),
        Call::GetJob(id) => job(api.get_job(&id).await?),
        Call::CancelJob(id) => job(api.cancel_job(&id).await?),
        Call::ListJobs { after, limit } => {
            let page = api.list_jobs(after.as_deref(), limit, &[]).await?;
            Decoded::Page {
                len: page.data.len(),
                has_more: page.has_more,
                ids: page.data.into_iter().map(|j| j.id).collect(),
            }
        }
        Call::Events { id, after, limit } => {
            let page = api.list_events(&id, after.as_deref(), limit).await?;
            Decoded::Page {
                len: page.data.len(),
                has_more: page.has_more,
                ids: page.data.into_iter().map(|e| e.id).collect(),
            }
        }
        Call::Checkpoints { id, after, limit } => {
            let page = api.list_checkpoints(&id, after.as_deref(), limit).await?;
            Decoded::Page {
                len: page.data.len(),
                has_more: page.has_more,
                ids: page.data.into_iter().map(|c| c.id).collect(),
            }
        }
        Call::GetFile(id) => {
            let f = api.get_file(&id).await?;
            Decoded::File {
                id: f.id,
                bytes: f.bytes,
            }
        }
        Call::UploadFile => {
            let f = api.upload_file(&sample, "sample.jsonl").await?;
            Decoded::File {
                id: f.id,
                bytes: f.bytes,
            }
        }
        Call::CreateUpload { filename, bytes } => {
            upload(api.create_upload(&filename, bytes).await?)
        }
        Call::AddPart(id) => Decoded::Part {
            id: api.add_upload_part(&id, &sample, 0, 8).await?.id,
        },
        Call::Complete { id, part_ids } => upload(api.complete_upload(&id, &part_ids).await?),
        Call::CancelUpload(id) => upload(api.cancel_upload(&id).await?),
    })
}

/// The decoded value agrees with the recorded JSON on the fields callers rely on.
fn assert_matches_recording(entry: &Entry, decoded: &Decoded) {
    let raw = &entry.body;
    let name = &entry.name;
    match decoded {
        Decoded::Job { id, status, failed } => {
            assert_eq!(raw["id"], json!(id), "{name}");
            assert_eq!(raw["status"], json!(status), "{name}");
            let raw_failed = raw["error"].as_object().is_some_and(|e| !e.is_empty());
            assert_eq!(*failed, raw_failed, "{name}: error {}", raw["error"]);
        }
        Decoded::Page { len, has_more, ids } => {
            let data = raw["data"].as_array().unwrap();
            assert_eq!(*len, data.len(), "{name}");
            assert_eq!(json!(has_more), raw["has_more"], "{name}");
            let raw_ids: Vec<&str> = data.iter().map(|d| d["id"].as_str().unwrap()).collect();
            assert_eq!(*ids, raw_ids, "{name}");
        }
        Decoded::File { id, bytes } => {
            assert_eq!(raw["id"], json!(id), "{name}");
            assert_eq!(raw["bytes"], json!(bytes), "{name}");
        }
        Decoded::Upload { id, status, file } => {
            assert_eq!(raw["id"], json!(id), "{name}");
            assert_eq!(raw["status"], json!(status), "{name}");
            assert_eq!(raw["file"]["id"].as_str(), file.as_deref(), "{name}");
        }
        Decoded::Part { id } => assert_eq!(raw["id"], json!(id), "{name}"),
    }
}

fn error_text(e: &UpstreamError) -> String {
    format!("{e} {e:?}")
}

#[tokio::test]
async fn adapter_decodes_every_recorded_response() {
    let entries = recorded_entries();
    let server = MockServer::start().await;
    let api = adapter(&server);
    let dir = tempfile::tempdir().unwrap();
    let create_job = validator("CreateFineTuningJobRequest");
    let create_upload = validator("CreateUploadRequest");

    let (mut ok, mut errors, mut bodies_checked) = (0, 0, 0);
    let mut skipped = Vec::new();
    for entry in &entries {
        let Some((mount_method, mount_path, call)) = call_for(entry) else {
            skipped.push(entry.name.clone());
            continue;
        };
        server.reset().await;
        Mock::given(method(mount_method.as_str()))
            .and(path(mount_path.as_str()))
            .respond_with(replay(entry))
            .mount(&server)
            .await;

        let outcome = perform(&api, call, dir.path()).await;

        let received = server.received_requests().await.unwrap();
        assert_eq!(received.len(), 1, "{}: one request", entry.name);
        let sent = &received[0];
        assert_eq!(
            sent.headers["authorization"].to_str().unwrap(),
            format!("Bearer {KEY}")
        );
        assert_eq!(sent.headers["openai-organization"], "org-test");
        assert_eq!(sent.headers["openai-project"], "proj_test");
        for (k, v) in entry.uri.query_pairs() {
            assert_eq!(
                query(&sent.url, &k).as_deref(),
                Some(&*v),
                "{}: query {k}",
                entry.name
            );
        }
        // Where the SDK's request body was recorded, the adapter sends the same JSON,
        // and that JSON is valid for the spec.
        if entry.request_body.is_object() && mount_path == entry.uri.path() {
            let body: Value = sent.body_json().expect("JSON request body");
            assert_eq!(body, entry.request_body, "{}: request body", entry.name);
            let schema = if mount_path.ends_with("/uploads") {
                &create_upload
            } else {
                &create_job
            };
            assert_valid(schema, &body, &entry.name);
            bodies_checked += 1;
        }

        match outcome {
            Ok(decoded) => {
                assert!(entry.status < 300, "{}: {decoded:?}", entry.name);
                assert_matches_recording(entry, &decoded);
                ok += 1;
            }
            Err(e) => {
                let text = error_text(&e);
                assert!(!text.contains(KEY), "{}: key in {text}", entry.name);
                assert!(
                    !text.contains("****"),
                    "{}: masked key in {text}",
                    entry.name
                );
                let expected = &entry.body["error"]["message"];
                match (entry.status, &e) {
                    (
                        400,
                        UpstreamError::Rejected {
                            status: 400,
                            code,
                            param,
                            message,
                            ..
                        },
                    ) => {
                        assert_eq!(json!(code), entry.body["error"]["code"], "{}", entry.name);
                        assert_eq!(json!(param), entry.body["error"]["param"], "{}", entry.name);
                        assert_eq!(json!(message), *expected, "{}", entry.name);
                    }
                    (
                        401,
                        UpstreamError::Auth {
                            status: 401,
                            message,
                            ..
                        },
                    ) => {
                        assert!(message.starts_with("Incorrect API key provided: <redacted>"));
                    }
                    (404, UpstreamError::NotFound { message, .. }) => {
                        assert_eq!(json!(message), *expected, "{}", entry.name);
                    }
                    (status, e) => panic!("{}: HTTP {status} became {e:?}", entry.name),
                }
                errors += 1;
            }
        }
    }

    assert_eq!(entries.len(), 38, "recorded entries");
    assert_eq!(ok, 25, "successful responses decoded");
    assert_eq!(errors, 7, "error responses mapped");
    assert_eq!(
        bodies_checked, 8,
        "request bodies compared with the recordings"
    );
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "ChatTests/HelloWorldChat.json#0",
            "ChatTests/TokenLogProbabilitiesStreaming_False.json#0",
            "FilesTests/DeleteFile_True.json#1",
            "FilesTests/GetFile.json#2",
            "FilesTests/UploadFile_UsingFilePath.json#1",
            "UploadsTests/CompleteUploadWorks.json#4",
        ],
        "only foreign successes (chat, file deletion) are skipped"
    );
}

/// The specific error mappings the gRPC layer depends on, from the recordings.
#[tokio::test]
async fn recorded_errors_map_to_the_expected_kinds() {
    let entries = recorded_entries();
    let server = MockServer::start().await;
    let api = adapter(&server);
    let entry = |name: &str| entries.iter().find(|e| e.name == name).unwrap();
    let serve = |e: &Entry| {
        Mock::given(method("GET"))
            .and(path("/v1/fine_tuning/jobs/ftjob-x"))
            .respond_with(replay(e))
    };

    serve(entry(
        "FineTuningClientTests/ExceptionThrownOnInvalidModelName.json#0",
    ))
    .mount(&server)
    .await;
    match api.get_job("ftjob-x").await {
        Err(UpstreamError::Rejected {
            provider: "openai",
            status: 400,
            code: Some(code),
            param: None,
            ..
        }) => assert_eq!(code, "model_not_available"),
        other => panic!("{other:?}"),
    }

    server.reset().await;
    serve(entry("FilesTests/GetFileCanParseServiceError.json#0"))
        .mount(&server)
        .await;
    assert!(matches!(
        api.get_job("ftjob-x").await,
        Err(UpstreamError::NotFound {
            provider: "openai",
            ..
        })
    ));

    server.reset().await;
    serve(entry("ChatTests/AuthFailure.json#0"))
        .mount(&server)
        .await;
    let e = api.get_job("ftjob-x").await.unwrap_err();
    assert!(
        matches!(e, UpstreamError::Auth { status: 401, .. }),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    let text = error_text(&e);
    assert!(!text.contains(KEY) && !text.contains("not-a-re") && !text.contains("***"));
}

// ---------------------------------------------------------------------------------------
// Request schemas
// ---------------------------------------------------------------------------------------

fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors = violations(validator, instance);
    assert!(
        errors.is_empty(),
        "{what}: {instance} violates the spec: {errors:?}"
    );
}

fn hp(n_epochs: AutoOr, batch_size: AutoOr, lr: AutoOr, beta: Option<AutoOr>) -> Hyperparameters {
    Hyperparameters {
        n_epochs: Some(n_epochs),
        batch_size: Some(batch_size),
        learning_rate_multiplier: Some(lr),
        beta,
    }
}

fn job_requests() -> Vec<(&'static str, CreateJobRequest)> {
    let auto = AutoOr::Auto(AutoTag::Auto);
    let metadata = BTreeMap::from([
        ("request_id".to_owned(), "0b6c3f1e-req".to_owned()),
        ("team".to_owned(), "ml".to_owned()),
    ]);
    vec![
        (
            "minimal",
            CreateJobRequest {
                model: "gpt-4o-mini-2024-07-18".into(),
                training_file: "file-train".into(),
                ..CreateJobRequest::default()
            },
        ),
        (
            "supervised, every parameter",
            CreateJobRequest {
                model: "gpt-4o-mini-2024-07-18".into(),
                training_file: "file-train".into(),
                validation_file: Some("file-valid".into()),
                suffix: Some("support-bot".into()),
                seed: Some(2_147_483_647),
                method: Some(Method {
                    kind: "supervised".into(),
                    supervised: Some(MethodParams {
                        hyperparameters: Some(hp(
                            AutoOr::Number(3.0),
                            AutoOr::Number(16.0),
                            AutoOr::Number(1.8),
                            None,
                        )),
                    }),
                    dpo: None,
                }),
                metadata: metadata.clone(),
            },
        ),
        (
            "supervised, auto hyperparameters",
            CreateJobRequest {
                model: "gpt-4.1-mini-2025-04-14".into(),
                training_file: "file-train".into(),
                method: Some(Method {
                    kind: "supervised".into(),
                    supervised: Some(MethodParams {
                        hyperparameters: Some(hp(auto, auto, auto, None)),
                    }),
                    dpo: None,
                }),
                ..CreateJobRequest::default()
            },
        ),
        (
            "dpo, every parameter",
            CreateJobRequest {
                model: "gpt-4o-2024-08-06".into(),
                training_file: "file-prefs".into(),
                validation_file: Some("file-prefs-valid".into()),
                suffix: Some("x".repeat(64)),
                seed: Some(0),
                method: Some(Method {
                    kind: "dpo".into(),
                    supervised: None,
                    dpo: Some(MethodParams {
                        hyperparameters: Some(hp(
                            AutoOr::Number(2.0),
                            AutoOr::Number(1.0),
                            AutoOr::Number(2.0),
                            Some(AutoOr::Number(0.1)),
                        )),
                    }),
                }),
                metadata,
            },
        ),
        (
            "dpo, auto hyperparameters",
            CreateJobRequest {
                model: "gpt-4o-2024-08-06".into(),
                training_file: "file-prefs".into(),
                method: Some(Method {
                    kind: "dpo".into(),
                    supervised: None,
                    dpo: Some(MethodParams {
                        hyperparameters: Some(hp(auto, auto, auto, Some(auto))),
                    }),
                }),
                ..CreateJobRequest::default()
            },
        ),
    ]
}

fn job_json() -> Value {
    json!({
        "object": "fine_tuning.job", "id": "ftjob-abc", "model": "gpt-4o-mini-2024-07-18",
        "created_at": 1, "status": "validating_files", "training_file": "file-train",
        "error": {}, "result_files": []
    })
}

#[tokio::test]
async fn every_create_job_body_validates_against_the_spec() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/fine_tuning/jobs"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job_json()))
        .mount(&server)
        .await;
    let api = adapter(&server);
    let schema = validator("CreateFineTuningJobRequest");

    let requests = job_requests();
    for (_, request) in &requests {
        api.create_job(request).await.expect("create");
    }
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), requests.len());
    let mut validated = 0;
    for ((what, request), sent) in requests.iter().zip(&received) {
        assert_eq!(sent.headers["content-type"], "application/json", "{what}");
        let body: Value = sent.body_json().unwrap();
        assert_valid(&schema, &body, what);
        validated += 1;
        // The spec types batch_size and n_epochs as integers: no `2.0` on the wire.
        if let Some(method) = &request.method {
            let hp = &body["method"][&method.kind]["hyperparameters"];
            for field in ["n_epochs", "batch_size"] {
                assert!(
                    hp[field].is_u64() || hp[field] == "auto",
                    "{what}: {field} = {}",
                    hp[field]
                );
            }
        }
        assert_eq!(body["model"], json!(request.model));
        assert_eq!(
            body.get("metadata").cloned().unwrap_or(json!({})),
            json!(request.metadata)
        );
    }
    assert_eq!(validated, 5, "create-job bodies validated");
    // Every optional field the service sets is exercised at least once.
    let every = received[1].body_json::<Value>().unwrap();
    for field in [
        "model",
        "training_file",
        "validation_file",
        "suffix",
        "seed",
        "method",
        "metadata",
    ] {
        assert!(every.get(field).is_some(), "{field} not exercised");
    }
}

/// Parts of a `multipart/form-data` body: (name, filename, content type, data).
type FormPart = (String, Option<String>, Option<String>, Vec<u8>);

fn multipart_parts(request: &Request) -> Vec<FormPart> {
    let content_type = request.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("multipart/form-data"),
        "{content_type}"
    );
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("boundary")
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let body = &request.body;
    let starts: Vec<usize> = memchr::memmem::find_iter(body, delimiter.as_bytes()).collect();
    let mut parts = Vec::new();
    for pair in starts.windows(2) {
        let chunk = &body[pair[0] + delimiter.len()..pair[1]];
        let chunk = chunk.strip_prefix(b"\r\n").expect("CRLF after delimiter");
        let chunk = chunk.strip_suffix(b"\r\n").expect("CRLF before delimiter");
        let split = memchr::memmem::find(chunk, b"\r\n\r\n").expect("part headers");
        let head = std::str::from_utf8(&chunk[..split]).unwrap();
        let data = chunk[split + 4..].to_vec();
        let param = |key: &str| {
            head.split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.split('"').next().unwrap().to_owned())
        };
        let part_type = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        });
        parts.push((param("name").unwrap(), param("filename"), part_type, data));
    }
    assert!(
        body.ends_with(format!("{delimiter}--\r\n").as_bytes()),
        "closing delimiter"
    );
    parts
}

#[tokio::test]
async fn file_upload_is_a_multipart_create_file_request() {
    let server = MockServer::start().await;
    let recorded = recorded_entries()
        .into_iter()
        .find(|e| e.name == "FilesTests/UploadFile_UsingFilePath.json#0")
        .unwrap();
    Mock::given(method("POST"))
        .and(path("/v1/files"))
        .respond_with(replay(&recorded))
        .mount(&server)
        .await;
    let api = adapter(&server);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stored-under-another-name");
    let content = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n".repeat(50);
    std::fs::write(&file, &content).unwrap();

    let uploaded = api.upload_file(&file, "train.jsonl").await.expect("upload");
    assert_eq!(json!(uploaded.id), recorded.body["id"]);

    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let parts = multipart_parts(&received[0]);
    let names: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, ["purpose", "file"]);
    assert_eq!(parts[0].3, b"fine-tune");
    assert_eq!(
        parts[1].1.as_deref(),
        Some("train.jsonl"),
        "the given filename"
    );
    assert_eq!(parts[1].3, content.as_bytes(), "the file's bytes");
    assert_eq!(
        received[0].headers["content-length"].to_str().unwrap(),
        received[0].body.len().to_string(),
        "a streamed body of known length"
    );

    // The form as the spec's CreateFileRequest sees it (binary parts are strings).
    let form = json!({
        "purpose": String::from_utf8(parts[0].3.clone()).unwrap(),
        "file": String::from_utf8(parts[1].3.clone()).unwrap(),
    });
    assert_valid(&validator("CreateFileRequest"), &form, "POST /files form");
}

#[tokio::test]
async fn large_file_upload_bodies_validate_against_the_spec() {
    let entries = recorded_entries();
    let flow: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.name.starts_with("UploadsTests/CompleteUploadWorks.json#"))
        .collect();
    let upload_id = flow[0].body["id"].as_str().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/uploads"))
        .respond_with(replay(flow[0]))
        .mount(&server)
        .await;
    // Two recorded parts, answered in order.
    for part in &flow[1..3] {
        Mock::given(method("POST"))
            .and(path(format!("/v1/uploads/{upload_id}/parts")))
            .respond_with(replay(part))
            .up_to_n_times(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path(format!("/v1/uploads/{upload_id}/complete")))
        .respond_with(replay(flow[3]))
        .mount(&server)
        .await;

    let mut config = OpenAiConfig::new(KEY, format!("{}/v1/", server.uri()));
    config.upload_threshold_bytes = 1000;
    config.part_size_bytes = 2000;
    let api = OpenAi::new(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.jsonl");
    let content: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&file, &content).unwrap();

    let uploaded = api.upload_file(&file, "big.jsonl").await.expect("upload");
    assert_eq!(json!(uploaded.id), flow[3].body["file"]["id"]);

    let received = server.received_requests().await.unwrap();
    let paths: Vec<String> = received.iter().map(|r| r.url.path().to_owned()).collect();
    assert_eq!(
        paths,
        [
            "/v1/uploads".to_owned(),
            format!("/v1/uploads/{upload_id}/parts"),
            format!("/v1/uploads/{upload_id}/parts"),
            format!("/v1/uploads/{upload_id}/complete"),
        ]
    );

    let mut validated = 0;
    let create: Value = received[0].body_json().unwrap();
    assert_valid(&validator("CreateUploadRequest"), &create, "create upload");
    validated += 1;
    assert_eq!(
        create,
        json!({"filename": "big.jsonl", "purpose": "fine-tune", "bytes": 3000, "mime_type": "text/jsonl"})
    );

    let mut reassembled = Vec::new();
    for (request, expected_len) in received[1..3].iter().zip([2000, 1000]) {
        let parts = multipart_parts(request);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, "data");
        assert_eq!(parts[0].3.len(), expected_len, "part size");
        reassembled.extend_from_slice(&parts[0].3);
        // AddUploadPartRequest: `data` is the one required field.
        let form = json!({"data": String::from_utf8(parts[0].3.clone()).unwrap()});
        assert_valid(
            &validator("AddUploadPartRequest"),
            &form,
            "upload part form",
        );
        validated += 1;
    }
    assert_eq!(reassembled, content, "the parts, in order, are the file");

    let complete: Value = received[3].body_json().unwrap();
    assert_valid(
        &validator("CompleteUploadRequest"),
        &complete,
        "complete upload",
    );
    validated += 1;
    assert_eq!(
        complete,
        json!({"part_ids": [flow[1].body["id"], flow[2].body["id"]]}),
        "part ids in file order"
    );
    assert_eq!(validated, 4, "upload bodies validated");
}

/// The query parameters of `path`'s GET operation in the spec, by name.
fn query_parameters(api_path: &str) -> BTreeMap<String, Value> {
    spec()["paths"][api_path]["get"]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("no GET parameters for {api_path}"))
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p.clone()))
        .collect()
}

/// Decodes a request's query the way the spec describes it (deepObject for
/// `name[key]=value`, integers where the schema says so) and validates each parameter.
fn assert_query_matches_spec(request: &Request, api_path: &str) -> Value {
    let parameters = query_parameters(api_path);
    let mut decoded = serde_json::Map::new();
    for (name, value) in request.url.query_pairs() {
        let (base, key) = match name.split_once('[') {
            Some((base, rest)) => (
                base.to_owned(),
                Some(rest.strip_suffix(']').unwrap().to_owned()),
            ),
            None => (name.to_string(), None),
        };
        let parameter = parameters
            .get(&base)
            .unwrap_or_else(|| panic!("{api_path}: `{name}` is not a parameter of the spec"));
        match key {
            Some(key) => {
                assert_eq!(parameter["style"], "deepObject", "{name}");
                assert_eq!(parameter["explode"], true, "{name}");
                decoded
                    .entry(base)
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .unwrap()
                    .insert(key, json!(value));
            }
            None => {
                let typed = if parameter["schema"]["type"] == "integer" {
                    json!(value.parse::<i64>().expect("an integer"))
                } else {
                    json!(value)
                };
                assert!(decoded.insert(base, typed).is_none(), "{name} repeated");
            }
        }
    }
    for (name, value) in &decoded {
        let schema = validator_for_schema(parameters[name]["schema"].clone());
        assert_valid(&schema, value, &format!("{api_path} query {name}"));
    }
    Value::Object(decoded)
}

#[tokio::test]
async fn list_queries_match_the_spec_parameters() {
    let server = MockServer::start().await;
    let page = json!({"object": "list", "data": [], "has_more": false});
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .mount(&server)
        .await;
    let api = adapter(&server);
    let metadata = [
        ("request_id".to_owned(), "req 1/2&3".to_owned()),
        ("team".to_owned(), "ml".to_owned()),
    ];
    api.list_jobs(Some("ftjob-abc"), 5, &metadata)
        .await
        .unwrap();
    api.list_jobs(None, 20, &[]).await.unwrap();
    api.list_events("ftjob-abc", Some("ftevent-1"), 100)
        .await
        .unwrap();
    api.list_checkpoints("ftjob-abc", None, 10).await.unwrap();

    let received = server.received_requests().await.unwrap();
    assert_eq!(
        assert_query_matches_spec(&received[0], "/fine_tuning/jobs"),
        json!({"after": "ftjob-abc", "limit": 5,
               "metadata": {"request_id": "req 1/2&3", "team": "ml"}})
    );
    assert_eq!(
        assert_query_matches_spec(&received[1], "/fine_tuning/jobs"),
        json!({"limit": 20})
    );
    assert_eq!(
        received[2].url.path(),
        "/v1/fine_tuning/jobs/ftjob-abc/events"
    );
    assert_eq!(
        assert_query_matches_spec(
            &received[2],
            "/fine_tuning/jobs/{fine_tuning_job_id}/events"
        ),
        json!({"after": "ftevent-1", "limit": 100})
    );
    assert_eq!(
        assert_query_matches_spec(
            &received[3],
            "/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"
        ),
        json!({"limit": 10})
    );
}

/// The harness itself: each validator rejects a body that breaks its schema, so a
/// passing validation above means something.
#[test]
fn schema_validation_rejects_broken_bodies() {
    let create_job = validator("CreateFineTuningJobRequest");
    let good = json!({"model": "gpt-4o-mini", "training_file": "file-a",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}});
    assert_valid(&create_job, &good, "good body");
    let broken = [
        json!({"model": "gpt-4o-mini"}),
        json!({"model": "gpt-4o-mini", "training_file": 7}),
        json!({"model": "m", "training_file": "f", "suffix": ""}),
        json!({"model": "m", "training_file": "f", "suffix": "x".repeat(65)}),
        json!({"model": "m", "training_file": "f", "seed": -1}),
        json!({"model": "m", "training_file": "f", "metadata": {"k": 1}}),
        json!({"model": "m", "training_file": "f", "method": {"type": "unsupervised"}}),
        json!({"model": "m", "training_file": "f",
               "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}}),
        json!({"model": "m", "training_file": "f",
               "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": "big"}}}}),
        json!({"model": "m", "training_file": "f",
               "method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": 0}}}}),
        json!({"model": "m", "training_file": "f",
               "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}}),
    ];
    for body in &broken {
        assert!(
            !violations(&create_job, body).is_empty(),
            "accepted broken body {body}"
        );
    }
    // Nullable fields stay nullable after the OpenAPI 3.0 rewrite.
    assert_valid(
        &create_job,
        &json!({"model": "m", "training_file": "f", "suffix": null, "validation_file": null, "metadata": null}),
        "nulls",
    );

    let create_upload = validator("CreateUploadRequest");
    assert!(
        !violations(
            &create_upload,
            &json!({"filename": "a", "purpose": "fine-tune", "bytes": 1})
        )
        .is_empty()
    );
    assert!(
        !violations(
            &create_upload,
            &json!({"filename": "a", "purpose": "fine-tune", "bytes": 1,
        "mime_type": "text/jsonl", "extra": true})
        )
        .is_empty()
    );
    assert!(
        !violations(
            &create_upload,
            &json!({"filename": "a", "purpose": "training", "bytes": 1,
        "mime_type": "text/jsonl"})
        )
        .is_empty()
    );
    let complete = validator("CompleteUploadRequest");
    assert!(!violations(&complete, &json!({"part_ids": "part_a"})).is_empty());
    assert!(!violations(&complete, &json!({})).is_empty());
    let create_file = validator("CreateFileRequest");
    assert!(!violations(&create_file, &json!({"file": "x", "purpose": "training"})).is_empty());
    assert!(!violations(&create_file, &json!({"purpose": "fine-tune"})).is_empty());
}
