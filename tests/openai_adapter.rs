//! Behaviour of the OpenAI adapter beyond the recorded contract: error classification,
//! Retry-After, tolerant decoding, configuration, headers and the upload paths.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use finetune_core::Error;
use finetune_core::ports::{RetryPolicy, UpstreamError};
use finetune_providers::OpenAiConfig;
use finetune_providers::openai::OpenAi;
use finetune_providers::parse_retry_after;
use finetune_providers::types::{AutoOr, AutoTag};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-test-adapter-9a8b7c6d5e";

/// One exchange per call: these tests check how each response is classified (the
/// retries have their own tests, tests/faults.rs).
fn config(server: &MockServer) -> OpenAiConfig {
    OpenAiConfig {
        retry: RetryPolicy::none(),
        ..OpenAiConfig::new(KEY, format!("{}/v1", server.uri()))
    }
}

fn adapter(server: &MockServer) -> OpenAi {
    OpenAi::new(config(server)).expect("adapter")
}

fn job(extra: Value) -> Value {
    let mut job = json!({
        "object": "fine_tuning.job", "id": "ftjob-abc", "model": "gpt-4o-mini-2024-07-18",
        "created_at": 1_721_764_800, "finished_at": null, "fine_tuned_model": null,
        "organization_id": "org-1", "result_files": [], "status": "queued",
        "validation_file": null, "training_file": "file-abc", "trained_tokens": null,
        "error": {}, "seed": 42
    });
    for (k, v) in extra.as_object().unwrap() {
        job[k] = v.clone();
    }
    job
}

async fn serve_job(server: &MockServer, response: ResponseTemplate) {
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/v1/fine_tuning/jobs/ftjob-abc"))
        .respond_with(response)
        .mount(server)
        .await;
}

fn text(e: &UpstreamError) -> String {
    format!("{e} {e:?}")
}

fn envelope(message: &str, code: Option<&str>, param: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})
}

#[tokio::test]
async fn statuses_map_to_upstream_errors() {
    let server = MockServer::start().await;
    let api = adapter(&server);

    let cases: Vec<(u16, Value, &str)> = vec![
        (
            400,
            envelope("bad suffix", Some("invalid_value"), Some("suffix")),
            "Rejected",
        ),
        (
            401,
            envelope("no key", Some("invalid_api_key"), None),
            "Auth",
        ),
        (403, envelope("not allowed", None, None), "Auth"),
        (
            404,
            json!({"error": {"message": "No such job", "type": "invalid_request_error",
            "param": "id", "code": null}, "detail": {"message": "No such job", "code": null}}),
            "NotFound",
        ),
        (408, envelope("timeout", None, None), "Rejected"),
        (409, envelope("conflict", None, None), "Rejected"),
        (413, envelope("too large", None, None), "Rejected"),
        (
            422,
            envelope("unprocessable", None, Some("method.dpo")),
            "Rejected",
        ),
        (
            429,
            envelope("slow down", Some("rate_limit_exceeded"), None),
            "RateLimited",
        ),
        (500, envelope("oops", None, None), "Unavailable"),
        (502, json!("<html>bad gateway</html>"), "Unavailable"),
        (503, json!({}), "Unavailable"),
        (529, envelope("overloaded", None, None), "Unavailable"),
    ];
    for (status, body, kind) in cases {
        let response = match &body {
            Value::String(html) => {
                ResponseTemplate::new(status).set_body_raw(html.clone(), "text/html")
            }
            body => ResponseTemplate::new(status).set_body_json(body),
        };
        serve_job(&server, response).await;
        let e = api.get_job("ftjob-abc").await.unwrap_err();
        let got = match &e {
            UpstreamError::Rejected { status: s, .. } => {
                assert_eq!(*s, status);
                "Rejected"
            }
            UpstreamError::Auth { status: s, .. } => {
                assert_eq!(*s, status);
                "Auth"
            }
            UpstreamError::NotFound { .. } => "NotFound",
            UpstreamError::Local { .. } => "Local",
            UpstreamError::RateLimited { .. } => "RateLimited",
            UpstreamError::Unavailable { status: s, .. } => {
                assert_eq!(*s, Some(status));
                "Unavailable"
            }
            UpstreamError::Protocol { .. } => "Protocol",
            UpstreamError::Unconfirmed { .. } => "Unconfirmed",
        };
        assert_eq!(got, kind, "HTTP {status}: {e:?}");
        assert!(!text(&e).contains("<html>"), "raw body leaked: {e:?}");
        assert_eq!(
            e.is_retryable(),
            matches!(status, 408 | 409 | 429 | 500..=599),
            "{status}"
        );
    }

    // code/param/message come from the envelope; the 404's top-level `detail` is ignored.
    serve_job(
        &server,
        ResponseTemplate::new(400).set_body_json(envelope(
            "bad suffix",
            Some("invalid_value"),
            Some("suffix"),
        )),
    )
    .await;
    match api.get_job("ftjob-abc").await {
        Err(UpstreamError::Rejected {
            provider,
            code,
            param,
            message,
            ..
        }) => {
            assert_eq!(provider, "openai");
            assert_eq!(code.as_deref(), Some("invalid_value"));
            assert_eq!(param.as_deref(), Some("suffix"));
            assert_eq!(message, "bad suffix");
        }
        other => panic!("{other:?}"),
    }
    // A non-string code is kept as text rather than losing the whole envelope.
    serve_job(
        &server,
        ResponseTemplate::new(400).set_body_json(json!({"error": {"message": "m", "code": 400}})),
    )
    .await;
    assert!(matches!(
        api.get_job("ftjob-abc").await,
        Err(UpstreamError::Rejected { code: Some(c), .. }) if c == "400"
    ));
}

#[test]
fn retry_after_headers_are_parsed() {
    let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    let parse = |pairs: &[(&'static str, &str)]| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        parse_retry_after(&headers, now)
    };
    assert_eq!(parse(&[]), None);
    assert_eq!(
        parse(&[("retry-after-ms", "1500")]),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        parse(&[("retry-after-ms", "2.5")]),
        Some(Duration::from_micros(2500))
    );
    assert_eq!(parse(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
    assert_eq!(
        parse(&[("retry-after", "0.5")]),
        Some(Duration::from_millis(500))
    );
    // retry-after-ms wins over Retry-After.
    assert_eq!(
        parse(&[("retry-after-ms", "20"), ("retry-after", "30")]),
        Some(Duration::from_millis(20))
    );
    // An unusable retry-after-ms falls back to Retry-After.
    assert_eq!(
        parse(&[("retry-after-ms", "soon"), ("retry-after", "3")]),
        Some(Duration::from_secs(3))
    );
    // The three HTTP date forms, 30 s after `now`.
    for date in [
        "Sun, 06 Nov 1994 08:50:07 GMT",
        "Sunday, 06-Nov-94 08:50:07 GMT",
        "Sun Nov  6 08:50:07 1994",
    ] {
        assert_eq!(
            parse(&[("retry-after", date)]),
            Some(Duration::from_secs(30)),
            "{date}"
        );
    }
    // A date in the past means now.
    assert_eq!(
        parse(&[("retry-after", "Sat, 05 Nov 1994 08:49:37 GMT")]),
        Some(Duration::ZERO)
    );
    assert_eq!(
        parse(&[("retry-after", "Thu, 01 Jan 2026 00:00:00 GMT")]).map(|d| d.as_secs()),
        Some(1_767_225_600 - 784_111_777)
    );
    for junk in [
        "-1",
        "soon",
        "NaN",
        "inf",
        "Sun, 06 Nov 1994 25:00:00 GMT",
        "Sun, 32 Nov 1994 08:00:00 GMT",
        "1e400",
    ] {
        assert_eq!(parse(&[("retry-after", junk)]), None, "{junk}");
    }
}

#[tokio::test]
async fn rate_limits_carry_the_requested_delay() {
    let server = MockServer::start().await;
    let api = adapter(&server);
    let limited = ResponseTemplate::new(429).set_body_json(envelope(
        "Rate limit reached",
        Some("rate_limit_exceeded"),
        None,
    ));

    serve_job(
        &server,
        limited
            .clone()
            .insert_header("retry-after-ms", "250")
            .insert_header("retry-after", "1"),
    )
    .await;
    match api.get_job("ftjob-abc").await {
        Err(UpstreamError::RateLimited {
            retry_after,
            message,
            ..
        }) => {
            assert_eq!(retry_after, Some(Duration::from_millis(250)));
            assert_eq!(message, "Rate limit reached");
        }
        other => panic!("{other:?}"),
    }
    serve_job(&server, limited.clone().insert_header("retry-after", "2")).await;
    assert!(matches!(
        api.get_job("ftjob-abc").await,
        Err(UpstreamError::RateLimited { retry_after: Some(d), .. }) if d == Duration::from_secs(2)
    ));
    let in_a_minute = SystemTime::now() + Duration::from_secs(60);
    let date = http_date(in_a_minute);
    serve_job(
        &server,
        limited.clone().insert_header("retry-after", date.as_str()),
    )
    .await;
    match api.get_job("ftjob-abc").await {
        Err(UpstreamError::RateLimited {
            retry_after: Some(d),
            ..
        }) => {
            assert!(
                d > Duration::from_secs(50) && d <= Duration::from_secs(60),
                "{d:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    serve_job(&server, limited).await;
    assert!(matches!(
        api.get_job("ftjob-abc").await,
        Err(UpstreamError::RateLimited {
            retry_after: None,
            ..
        })
    ));
}

/// IMF-fixdate of `t` (whole seconds).
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant), for the test's own clock.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        weekdays[(days % 7) as usize],
        months[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test]
async fn undecodable_bodies_are_protocol_errors_without_the_body() {
    let server = MockServer::start().await;
    let api = adapter(&server);
    for (body, mime) in [
        ("<html>captive portal secret-token-123</html>", "text/html"),
        (
            "{\"id\": 5, \"secret\": \"secret-token-123\"}",
            "application/json",
        ),
        ("{\"object\": \"fine_tuning.job\"", "application/json"),
        ("", "application/json"),
    ] {
        serve_job(&server, ResponseTemplate::new(200).set_body_raw(body, mime)).await;
        let e = api.get_job("ftjob-abc").await.unwrap_err();
        assert!(
            matches!(
                e,
                UpstreamError::Protocol {
                    provider: "openai",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!e.is_retryable());
        let t = text(&e);
        assert!(
            !t.contains("secret-token-123") && !t.contains("captive"),
            "{t}"
        );
        assert!(
            t.contains("fine-tuning job"),
            "names what was expected: {t}"
        );
    }
    // An unexpected non-error status is a protocol error too.
    serve_job(&server, ResponseTemplate::new(304)).await;
    assert!(matches!(
        api.get_job("ftjob-abc").await,
        Err(UpstreamError::Protocol { .. })
    ));
}

#[tokio::test]
async fn jobs_decode_tolerantly() {
    let server = MockServer::start().await;
    let api = adapter(&server);

    // `error: {}` is no error; unknown status and fields are kept / ignored.
    for status in ["paused", "new_status"] {
        serve_job(
            &server,
            ResponseTemplate::new(200).set_body_json(job(json!({
                "status": status, "error": {}, "usage_metrics": {"x": 1},
                "shared_with_openai": false, "brand_new_field": [1, {"a": null}]
            }))),
        )
        .await;
        let j = api.get_job("ftjob-abc").await.unwrap();
        assert_eq!(j.status, status);
        assert!(j.failure().is_none());
    }

    // A real failure.
    serve_job(
        &server,
        ResponseTemplate::new(200).set_body_json(job(json!({
            "status": "failed",
            "error": {"code": "invalid_n_examples", "param": "training_file",
                      "message": "Training file has 3 example(s), but must have at least 10 examples"}
        }))),
    )
    .await;
    let j = api.get_job("ftjob-abc").await.unwrap();
    assert_eq!(
        j.failure().unwrap().code.as_deref(),
        Some("invalid_n_examples")
    );

    // learning_rate_multiplier as 2 or 2.0, and "auto".
    for lr in [json!(2), json!(2.0)] {
        serve_job(
            &server,
            ResponseTemplate::new(200).set_body_json(job(json!({
                "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": lr},
                "method": {"type": "supervised", "supervised": {"hyperparameters":
                    {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": lr}}}
            }))),
        )
        .await;
        let j = api.get_job("ftjob-abc").await.unwrap();
        let hp = j.effective_hyperparameters().unwrap();
        assert_eq!(
            hp.learning_rate_multiplier.and_then(AutoOr::value),
            Some(2.0)
        );
        assert_eq!(hp.n_epochs.and_then(AutoOr::value), Some(3.0));
    }
    serve_job(
        &server,
        ResponseTemplate::new(200).set_body_json(job(json!({
            "status": "validating_files", "error": null,
            "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
        }))),
    )
    .await;
    let j = api.get_job("ftjob-abc").await.unwrap();
    assert!(j.failure().is_none());
    let hp = j.effective_hyperparameters().unwrap();
    assert_eq!(hp.n_epochs, Some(AutoOr::Auto(AutoTag::Auto)));
    assert_eq!(hp.learning_rate_multiplier.and_then(AutoOr::value), None);

    // Events with null, {} or metrics data.
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/v1/fine_tuning/jobs/ftjob-abc/events"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "has_more": false, "data": [
                {"object": "fine_tuning.job.event", "id": "e3", "created_at": 3, "level": "info",
                 "message": "Step 2/10: training loss=0.5", "type": "metrics",
                 "data": {"step": 2, "total_steps": 10, "train_loss": 0.5, "train_mean_token_accuracy": 0.9}},
                {"object": "fine_tuning.job.event", "id": "e2", "created_at": 2, "level": "warn",
                 "message": "m", "type": "message", "data": {}},
                {"object": "fine_tuning.job.event", "id": "e1", "created_at": 1, "level": "info",
                 "message": "Created fine-tuning job", "data": null}
            ]})))
        .mount(&server)
        .await;
    let page = api.list_events("ftjob-abc", None, 20).await.unwrap();
    assert_eq!(page.data.len(), 3);
    let metrics = page.data[0].metrics().unwrap();
    assert_eq!((metrics.step, metrics.total_steps), (Some(2), Some(10)));
    assert!(page.data[1].metrics().is_none() && page.data[2].metrics().is_none());
}

#[tokio::test]
async fn connection_failures_and_timeouts_are_unavailable() {
    // A port nothing listens on: bind, note it, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let api = OpenAi::new(OpenAiConfig::new(
        KEY,
        format!("http://127.0.0.1:{port}/v1"),
    ))
    .unwrap();
    let e = api.get_job("ftjob-abc").await.unwrap_err();
    assert!(
        matches!(e, UpstreamError::Unavailable { status: None, .. }),
        "{e:?}"
    );
    assert!(e.is_retryable());
    assert!(!text(&e).contains(KEY));

    let server = MockServer::start().await;
    serve_job(
        &server,
        ResponseTemplate::new(200)
            .set_body_json(job(json!({})))
            .set_delay(Duration::from_secs(5)),
    )
    .await;
    let mut config = config(&server);
    config.timeout = Duration::from_millis(200);
    let api = OpenAi::new(config).unwrap();
    let started = std::time::Instant::now();
    let e = api.get_job("ftjob-abc").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the per-call timeout applies"
    );
    match &e {
        UpstreamError::Unavailable {
            status: None,
            message,
            ..
        } => {
            assert!(message.contains("timed out"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_key_never_appears_in_errors_or_debug_output() {
    let server = MockServer::start().await;
    let api = adapter(&server);
    let debug = format!("{api:?} {:?}", config(&server));
    assert!(!debug.contains(KEY), "{debug}");

    // A server that echoes the key back, whole and masked the way OpenAI does.
    for (status, message) in [
        (401, format!("Incorrect API key provided: {KEY}.")),
        (
            401,
            "Incorrect API key provided: sk-test-********************5e. You can find it"
                .to_owned(),
        ),
        (400, format!("param was {KEY} and sk-proj-abcdefghijklmnop")),
        (404, format!("no such thing {}", &KEY[..KEY.len() - 1])),
    ] {
        serve_job(
            &server,
            ResponseTemplate::new(status).set_body_json(envelope(&message, Some(KEY), Some(KEY))),
        )
        .await;
        let e = api.get_job("ftjob-abc").await.unwrap_err();
        let t = text(&e);
        assert!(!t.contains(KEY), "{t}");
        assert!(!t.contains("sk-test-"), "{t}");
        assert!(!t.contains("sk-proj-abc"), "{t}");
        assert!(t.contains("<redacted>"), "{t}");
        // Through the gRPC mapping too.
        let status = finetune::service::status::status(Error::Upstream(e));
        assert!(!format!("{status:?}").contains("sk-test-"), "{status:?}");
    }
}

#[tokio::test]
async fn requests_carry_auth_org_and_project_headers_and_encode_ids() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/fine_tuning/jobs/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job(json!({}))))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("/cancel$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job(json!({"status": "cancelled"}))))
        .mount(&server)
        .await;

    let mut with_ids = config(&server);
    with_ids.organization = Some("org-123".into());
    with_ids.project = Some("proj_456".into());
    with_ids.base_url = format!("{}/v1/", server.uri()); // trailing slash tolerated
    OpenAi::new(with_ids)
        .unwrap()
        .get_job("ftjob-abc")
        .await
        .unwrap();
    adapter(&server).get_job("odd id/../x?y").await.unwrap();
    let cancelled = adapter(&server).cancel_job("ftjob-abc").await.unwrap();
    assert_eq!(cancelled.status, "cancelled");

    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 3);
    let first = &received[0];
    assert_eq!(first.url.path(), "/v1/fine_tuning/jobs/ftjob-abc");
    assert_eq!(
        first.headers["authorization"],
        format!("Bearer {KEY}").as_str()
    );
    assert_eq!(first.headers["openai-organization"], "org-123");
    assert_eq!(first.headers["openai-project"], "proj_456");
    assert!(
        first.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("finetune/")
    );

    let second = &received[1];
    assert!(second.headers.get("openai-organization").is_none());
    assert!(second.headers.get("openai-project").is_none());
    assert_eq!(
        second.url.path(),
        "/v1/fine_tuning/jobs/odd%20id%2F..%2Fx%3Fy"
    );
    assert_eq!(second.url.query(), None);

    assert_eq!(received[2].method.as_str(), "POST");
    assert_eq!(
        received[2].url.path(),
        "/v1/fine_tuning/jobs/ftjob-abc/cancel"
    );
}

#[test]
fn invalid_configurations_are_refused_without_echoing_the_key() {
    let bad = |mutate: fn(&mut OpenAiConfig)| {
        let mut c = OpenAiConfig::new("sk-test-secret", "https://api.openai.com/v1");
        mutate(&mut c);
        let e = OpenAi::new(c).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(!format!("{e} {e:?}").contains("sk-test-secret"), "{e}");
    };
    bad(|c| c.api_key = String::new());
    bad(|c| c.api_key = "sk-test-secret\nX-Evil: 1".into());
    bad(|c| c.base_url = "not a url sk-test-secret".into());
    bad(|c| c.base_url = "ftp://example.com/v1".into());
    bad(|c| c.base_url = "mailto:someone@example.com".into());
    bad(|c| c.part_size_bytes = 0);
    bad(|c| c.organization = Some("org\n1".into()));
}

async fn upload_server(fail_second_part: bool) -> MockServer {
    let server = MockServer::start().await;
    let file = json!({"object": "file", "id": "file-up", "purpose": "fine-tune", "filename": "big.jsonl",
        "bytes": 25, "created_at": 1, "expires_at": null, "status": "processed", "status_details": null});
    Mock::given(method("POST"))
        .and(path("/v1/files"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "file", "id": "file-small", "purpose": "fine-tune", "filename": "small.jsonl",
            "bytes": 10, "created_at": 1, "status": "processed"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/uploads"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "upload_1", "object": "upload", "status": "pending", "bytes": 25})))
        .mount(&server)
        .await;
    if fail_second_part {
        Mock::given(method("POST"))
            .and(path("/v1/uploads/upload_1/parts"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": "part_1", "object": "upload.part"})),
            )
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/uploads/upload_1/parts"))
            .respond_with(ResponseTemplate::new(503).set_body_json(envelope(
                "overloaded",
                None,
                None,
            )))
            .mount(&server)
            .await;
    } else {
        for i in 1..=3 {
            Mock::given(method("POST"))
                .and(path("/v1/uploads/upload_1/parts"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"id": format!("part_{i}"), "object": "upload.part"})),
                )
                .up_to_n_times(1)
                .mount(&server)
                .await;
        }
    }
    Mock::given(method("POST"))
        .and(path("/v1/uploads/upload_1/complete"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "upload_1", "object": "upload", "status": "completed", "bytes": 25, "file": file})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/uploads/upload_1/cancel"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "upload_1", "object": "upload", "status": "cancelled", "bytes": 25})))
        .mount(&server)
        .await;
    server
}

fn paths(requests: &[wiremock::Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.url.path().trim_start_matches("/v1").to_owned())
        .collect()
}

#[tokio::test]
async fn files_up_to_the_threshold_use_the_files_api_and_larger_ones_go_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let at_threshold = dir.path().join("small.jsonl");
    std::fs::write(&at_threshold, b"0123456789").unwrap();
    let over = dir.path().join("big.jsonl");
    std::fs::write(&over, b"abcdefghijklmnopqrstuvwxy").unwrap(); // 25 bytes

    let server = upload_server(false).await;
    let mut c = config(&server);
    c.upload_threshold_bytes = 10;
    c.part_size_bytes = 10;
    let api = OpenAi::new(c).unwrap();

    assert_eq!(
        api.upload_file(&at_threshold, "small.jsonl")
            .await
            .unwrap()
            .id,
        "file-small"
    );
    assert_eq!(
        paths(&server.received_requests().await.unwrap()),
        ["/files"]
    );

    let server = upload_server(false).await;
    let mut c = config(&server);
    c.upload_threshold_bytes = 10;
    c.part_size_bytes = 10;
    let api = OpenAi::new(c).unwrap();
    let file = api.upload_file(&over, "big.jsonl").await.unwrap();
    assert_eq!(file.id, "file-up");
    let received = server.received_requests().await.unwrap();
    assert_eq!(
        paths(&received),
        [
            "/uploads",
            "/uploads/upload_1/parts",
            "/uploads/upload_1/parts",
            "/uploads/upload_1/parts",
            "/uploads/upload_1/complete"
        ]
    );
    // Each part carries at most part_size_bytes: 10 + 10 + 5.
    for (request, chunk) in received[1..4]
        .iter()
        .zip([&b"abcdefghij"[..], b"klmnopqrst", b"uvwxy"])
    {
        let body = &request.body;
        assert!(memchr::memmem::find(body, chunk).is_some());
        assert!(memchr::memmem::find(body, b"name=\"data\"").is_some());
        assert!(body.len() < chunk.len() + 400, "only this part's bytes");
    }
    let complete: Value = received[4].body_json().unwrap();
    assert_eq!(
        complete,
        json!({"part_ids": ["part_1", "part_2", "part_3"]})
    );

    // A missing local file is reported, not sent.
    let e = api
        .upload_file(&dir.path().join("missing.jsonl"), "m.jsonl")
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Local { .. }), "{e:?}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn a_failed_part_cancels_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let over = dir.path().join("big.jsonl");
    std::fs::write(&over, b"abcdefghijklmnopqrstuvwxy").unwrap();
    let server = upload_server(true).await;
    let mut c = config(&server);
    c.upload_threshold_bytes = 10;
    c.part_size_bytes = 10;
    let api = OpenAi::new(c).unwrap();

    let e = api.upload_file(&over, "big.jsonl").await.unwrap_err();
    assert!(
        matches!(
            e,
            UpstreamError::Unavailable {
                status: Some(503),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        paths(&server.received_requests().await.unwrap()),
        [
            "/uploads",
            "/uploads/upload_1/parts",
            "/uploads/upload_1/parts",
            "/uploads/upload_1/cancel"
        ]
    );
}

#[tokio::test]
async fn a_completed_upload_without_a_file_is_a_protocol_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/uploads/upload_1/complete"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "upload_1", "status": "completed"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/uploads"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "upload_1", "status": "pending"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/uploads/upload_1/parts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "part_1"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/uploads/upload_1/cancel"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "upload_1", "status": "cancelled"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.upload_threshold_bytes = 1;
    let api = OpenAi::new(c).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.jsonl");
    std::fs::write(&f, b"{}\n{}\n").unwrap();
    let e = api.upload_file(&f, "t.jsonl").await.unwrap_err();
    assert!(matches!(e, UpstreamError::Protocol { .. }), "{e:?}");
}

/// Whether a failed create may have taken effect, which decides whether the job manager
/// must look for it before releasing the request id.
#[tokio::test]
async fn a_create_whose_answer_is_lost_may_have_taken_effect_a_refusal_did_nothing() {
    let server = MockServer::start().await;
    let api = adapter(&server);
    let request = finetune_providers::types::CreateJobRequest {
        model: "gpt-4o-mini-2024-07-18".into(),
        training_file: "file-abc".into(),
        validation_file: None,
        suffix: None,
        seed: None,
        method: None,
        metadata: Default::default(),
    };
    let full = serde_json::to_string(&job(json!({}))).unwrap();
    let cases = [
        // A 2xx answer cut in half: the job was made.
        (
            ResponseTemplate::new(200)
                .set_body_raw(full[..full.len() / 2].to_owned(), "application/json"),
            true,
        ),
        (
            ResponseTemplate::new(500).set_body_json(envelope("oops", None, None)),
            true,
        ),
        (
            ResponseTemplate::new(503).set_body_json(envelope("busy", None, None)),
            false,
        ),
        (
            ResponseTemplate::new(429).set_body_json(envelope("slow", None, None)),
            false,
        ),
        (
            ResponseTemplate::new(400).set_body_json(envelope("bad", None, Some("model"))),
            false,
        ),
    ];
    for (response, maybe) in cases {
        server.reset().await;
        Mock::given(method("POST"))
            .and(path("/v1/fine_tuning/jobs"))
            .respond_with(response)
            .mount(&server)
            .await;
        let e = api.create_job(&request).await.unwrap_err();
        assert_eq!(e.may_have_taken_effect(), maybe, "{e:?}");
        if maybe {
            assert!(e.is_retryable(), "{e:?}");
        }
    }
    // A connection that never opened did nothing.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let nowhere = OpenAi::new(OpenAiConfig {
        retry: RetryPolicy::none(),
        ..OpenAiConfig::new(KEY, format!("http://{addr}/v1"))
    })
    .unwrap();
    let e = nowhere.create_job(&request).await.unwrap_err();
    assert!(!e.may_have_taken_effect(), "{e:?}");
    assert!(matches!(e, UpstreamError::Unavailable { .. }), "{e:?}");
    // A read whose answer is cut stays a protocol error: nothing to look for.
    serve_job(
        &server,
        ResponseTemplate::new(200)
            .set_body_raw(full[..full.len() / 2].to_owned(), "application/json"),
    )
    .await;
    let e = api.get_job("ftjob-abc").await.unwrap_err();
    assert!(matches!(e, UpstreamError::Protocol { .. }), "{e:?}");
}
