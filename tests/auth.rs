//! Authentication and transport security: bearer tokens with roles on every RPC but health
//! and reflection, a non-loopback server refusing to start open, and TLS with rustls,
//! checked with tonic, the real grpcurl and the `finetune` CLI.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::TestServer;
use finetune::auth::{Role, new_token};
use finetune::config::ServeConfig;
use finetune::pb;
use finetune::pb::fine_tune_service_client::FineTuneServiceClient;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

struct Tokens {
    lines: String,
    admin: String,
    reader: String,
    completer: String,
}

fn tokens() -> Tokens {
    let (admin, a) = new_token("admin", &[Role::Read, Role::Train, Role::Complete]);
    let (reader, r) = new_token("dashboard", &[Role::Read]);
    let (completer, c) = new_token("backend", &[Role::Complete]);
    Tokens {
        lines: format!("{a}\n{r}\n{c}\n"),
        admin,
        reader,
        completer,
    }
}

fn validate_request() -> pb::ValidateDatasetRequest {
    pb::ValidateDatasetRequest {
        training: common::inline(common::sample_dataset(), "training-data.jsonl"),
        model: "gpt-4o-2024-08-06".into(),
        ..Default::default()
    }
}

fn ask() -> pb::CompleteRequest {
    pb::CompleteRequest {
        model: "gpt-4o-mini".into(),
        ..common::ask("Hello")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_needs_a_token_with_its_role() {
    let t = tokens();
    let lines = t.lines.clone();
    let server = TestServer::start_with(move |c| {
        c.emulator = true;
        c.emulator_time_scale = 1000.0;
        c.auth_tokens = Some(lines);
    })
    .await;
    let mut client = server.client();

    // Health and reflection stay open (probes and grpcurl's `list` need no token).
    let health = HealthClient::new(server.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");

    // No token, a wrong token, a malformed header.
    let status = client
        .validate_dataset(validate_request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("authorization: Bearer"),
        "{status:?}"
    );
    assert_eq!(common::reason(&status), "TOKEN_MISSING");
    let status = client
        .validate_dataset(common::authed(validate_request(), "ft_not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!status.message().contains("ft_not-a-token"), "never echoed");
    assert_eq!(common::reason(&status), "TOKEN_INVALID");

    // read: validate and list, but not train or complete.
    client
        .validate_dataset(common::authed(validate_request(), &t.reader))
        .await
        .unwrap();
    client
        .list_jobs(common::authed(pb::ListJobsRequest::default(), &t.reader))
        .await
        .unwrap();
    let start = common::StartTraining::new("auth-1").build();
    let status = client
        .start_training(common::authed(start.clone(), &t.reader))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("dashboard lacks the train role that StartTraining needs"),
        "{status:?}"
    );
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "ROLE_MISSING");
    assert_eq!(info.domain, "finetune.fileengine");
    assert_eq!(info.metadata["role"], "train");
    let status = client
        .complete(common::authed(ask(), &t.reader))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // complete: answers, but cannot read jobs.
    let answer = client
        .complete(common::authed(ask(), &t.completer))
        .await
        .unwrap()
        .into_inner()
        .completion
        .unwrap();
    common::prices::assert_cost(&answer, "gpt-4o-mini", false);
    let status = client
        .list_jobs(common::authed(pb::ListJobsRequest::default(), &t.completer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // All three roles: trains; nothing was started by the refused calls.
    let job = client
        .start_training(common::authed(start, &t.admin))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let jobs = client
        .list_jobs(common::authed(pb::ListJobsRequest::default(), &t.admin))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, job.id);
    server.stop().await;
}

#[tokio::test]
async fn a_non_loopback_server_without_tokens_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let error = finetune::server::serve(ServeConfig::for_data_dir(dir.path()), listener, async {})
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("refusing to serve 0.0.0.0:") && message.contains("--auth-tokens-file"),
        "{message}"
    );

    // Explicitly allowed, it starts (and the shutdown future, already complete, stops it).
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let mut config = ServeConfig::for_data_dir(dir.path());
    config.allow_unauthenticated = true;
    config.drain_seconds = 1;
    finetune::server::serve(config, listener, async {})
        .await
        .unwrap();
}

/// A CA and a server certificate for 127.0.0.1 and localhost, written as PEM files.
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "FineTune test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server.distinguished_name = DistinguishedName::new();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    std::fs::write(&cert_path, server_cert.pem()).unwrap();
    std::fs::write(&key_path, server_key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_tonic_grpcurl_and_the_cli_and_refuses_plaintext() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    let t = tokens();
    let data = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::for_data_dir(data.path());
    config.emulator = true;
    config.emulator_time_scale = 1000.0;
    config.auth_tokens = Some(t.lines.clone());
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(finetune::server::serve(config, listener, async {
        let _ = stopped.await;
    }));

    // tonic over TLS, trusting the CA.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let report = FineTuneServiceClient::new(channel)
        .validate_dataset(common::authed(validate_request(), &t.reader))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(report.training.unwrap().examples, 13);

    // A plaintext client gets nowhere.
    let plaintext = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let result = FineTuneServiceClient::new(channel)
            .validate_dataset(common::authed(validate_request(), &t.reader))
            .await;
        assert!(result.is_err(), "plaintext was answered: {result:?}");
    }

    // The real grpcurl: reflection without a token, an RPC with one, and without it.
    let grpcurl = common::find_grpcurl();
    let run = |args: &[&str]| {
        let out = Command::new(&grpcurl)
            .arg("-cacert")
            .arg(&ca)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let target = format!("localhost:{}", addr.port());
    let (code, stdout, stderr) = run(&[&target, "list"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("fileengine.finetune.v1.FineTuneService"));
    let header = format!("authorization: Bearer {}", t.reader);
    let (code, stdout, stderr) = run(&[
        "-H",
        &header,
        &target,
        "fileengine.finetune.v1.FineTuneService/ListTiers",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("\"tiers\""), "{stdout}");
    let (code, _, stderr) = run(&[&target, "fileengine.finetune.v1.FineTuneService/ListTiers"]);
    assert_eq!(code, Some(64 + 16), "UNAUTHENTICATED: {stderr}");

    // The CLI, with FINETUNE_TOKEN and --ca-file.
    let cli = |token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_finetune"));
        command
            .args([
                "tiers",
                "--addr",
                &format!("https://localhost:{}", addr.port()),
            ])
            .arg("--ca-file")
            .arg(&ca)
            .env_remove("FINETUNE_TOKEN");
        if let Some(token) = token {
            command.env("FINETUNE_TOKEN", token);
        }
        command.output().unwrap()
    };
    let out = cli(Some(&t.reader));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("fast"));
    let out = cli(None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not authenticated: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[test]
fn token_new_prints_a_token_whose_line_the_server_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args(["token", "new", "--name", "ci-bot", "--roles", "read,train"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap();
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tokens-file line: "))
        .unwrap();
    assert!(!line.contains(token), "the file line holds a hash only");
    let tokens = finetune::auth::Tokens::parse(line, "test").unwrap();
    let caller = tokens.authenticate(token).unwrap();
    assert_eq!(caller.name, "ci-bot");
    assert!(caller.has(Role::Read) && caller.has(Role::Train) && !caller.has(Role::Complete));

    let bad = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args(["token", "new", "--name", "x", "--roles", "admin"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown role \"admin\""));
}
