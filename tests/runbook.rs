//! docs/ops.md, the operator's grpcurl runbook, run as written: every ```bash block, in
//! order, with the real grpcurl binary against the real `finetune serve --emulator`.
//! A command that stops working, or whose output stops saying what the runbook promises,
//! fails this test; a command added to the runbook is run automatically.
//!
//! Blocks may be preceded by markers (HTML comments, invisible when rendered):
//! - `<!-- runbook: sets JOB -->`: the block prints a job; `job.id` becomes `$JOB`.
//! - `<!-- runbook: expect-exit N -->`: a documented error; grpcurl must exit with N.
//! - `<!-- runbook: after-sequence N -->`: a resumed WatchJob; every event is after N.
//! - `<!-- runbook: expect-cancelled -->`: the response's job is JOB_STATE_CANCELLED.
//! - `<!-- runbook: expect-error REASON key=value ... -->`: grpcurl decodes the error's
//!   ErrorInfo (not raw bytes), its reason is REASON and its metadata holds each key=value
//!   (`$JOB` is the current job); `violation=FIELD`: a decoded BadRequest names FIELD.
//!
//! Every error a block prints must have decoded details: the server describes
//! google.rpc's detail messages through reflection.

use crate::common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SERVICE: &str = "fileengine.finetune.v1.FineTuneService";

/// Every RPC the runbook must show an operator (grpcurl's `list` and `describe` aside).
const REQUIRED_RPCS: &[&str] = &[
    "grpc.health.v1.Health/Check",
    "ValidateDataset",
    "StartTraining",
    "GetJob",
    "ListJobs",
    "WatchJob",
    "CancelJob",
    "ListTiers",
    "Complete",
    "StreamComplete",
    "PromoteModel",
    "GetTierStats",
];

/// How long one runbook command may take before the test gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Debug, Default)]
struct Block {
    /// 1-based line of the opening fence in docs/ops.md.
    line: usize,
    command: String,
    sets_job: bool,
    expect_exit: i32,
    after_sequence: Option<u64>,
    expect_cancelled: bool,
    /// The ErrorInfo reason and `key=value` expectations of `expect-error`.
    expect_error: Option<(String, Vec<(String, String)>)>,
}

/// The ```bash blocks of the runbook in order, with the markers just before each.
fn parse_runbook(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut pending = Block::default();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim();
        if let Some(marker) = trimmed
            .strip_prefix("<!-- runbook:")
            .and_then(|m| m.strip_suffix("-->"))
        {
            let words: Vec<&str> = marker.split_whitespace().collect();
            match words.as_slice() {
                ["sets", "JOB"] => pending.sets_job = true,
                ["expect-exit", n] => {
                    pending.expect_exit = n.parse().expect("expect-exit takes a number")
                }
                ["after-sequence", n] => {
                    pending.after_sequence = Some(n.parse().expect("after-sequence: a number"))
                }
                ["expect-cancelled"] => pending.expect_cancelled = true,
                ["expect-error", reason, pairs @ ..] => {
                    let pairs = pairs
                        .iter()
                        .map(|p| {
                            let (k, v) = p.split_once('=').expect("expect-error takes key=value");
                            (k.to_owned(), v.to_owned())
                        })
                        .collect();
                    pending.expect_error = Some(((*reason).to_owned(), pairs));
                }
                _ => panic!("docs/ops.md:{}: unknown runbook marker {trimmed:?}", i + 1),
            }
        } else if trimmed == "```bash" {
            let mut command = String::new();
            let mut closed = false;
            for (_, body) in lines.by_ref() {
                if body.trim() == "```" {
                    closed = true;
                    break;
                }
                command.push_str(body);
                command.push('\n');
            }
            assert!(closed, "docs/ops.md:{}: unclosed ```bash block", i + 1);
            let mut block = std::mem::take(&mut pending);
            block.line = i + 1;
            block.command = command;
            blocks.push(block);
        }
    }
    blocks
}

/// The running server; SIGTERM on drop, so a failed assertion does not leak it.
struct Server {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_finetune"))
            .args([
                "serve",
                "--emulator",
                "--emulator-time-scale",
                "1000",
                "--poll-interval-seconds",
                "0.05",
            ])
            .env("FINETUNE_ADDR", "127.0.0.1:0")
            .env("FINETUNE_DATA_DIR", dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = common::address_on(&common::start_line(&mut child, Some(&log)));
        Server {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for the exit (SIGKILL after 15 s).
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs one block with `bash -c` from the repository root, grpcurl first on PATH.
fn run_block(command: &str, grpcurl_dir: &Path, addr: &str, job: &str) -> Outcome {
    let path = std::env::join_paths(std::iter::once(grpcurl_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut child = Command::new("bash")
        .args(["-c", command])
        .current_dir(repo_root())
        .env("PATH", path)
        .env("ADDR", addr)
        .env("JOB", job)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{command}` did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// grpcurl prints one JSON object per response message.
fn json_messages(stdout: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("grpcurl's output is not JSON ({e}):\n{stdout}"))
}

/// The RPC a command calls: `Service/Method` (the method alone for FineTuneService), or
/// `list` / `describe`.
fn rpc_of(command: &str) -> String {
    let words: Vec<&str> = command
        .split(|c: char| c.is_whitespace() || c == '\\')
        .filter(|w| !w.is_empty())
        .collect();
    if let Some(call) = words
        .iter()
        .rev()
        .find(|w| w.contains('/') && w.contains('.') && !w.starts_with('-'))
    {
        return call
            .strip_prefix(&format!("{SERVICE}/"))
            .unwrap_or(call)
            .to_owned();
    }
    for verb in ["list", "describe"] {
        if words.contains(&verb) {
            return verb.to_owned();
        }
    }
    panic!("no RPC, `list` or `describe` in `{command}`");
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v:#}"))
}

/// The error details grpcurl printed under `Details:`, one JSON object each. grpcurl prefixes
/// every line of a detail with `  N)\t` or spaces and a tab.
fn error_details(stderr: &str) -> Vec<Value> {
    let Some((_, details)) = stderr.split_once("\n  Details:\n") else {
        return Vec::new();
    };
    let json: String = details
        .lines()
        .map(|l| {
            l.split_once('\t')
                .unwrap_or_else(|| panic!("not a detail line: {l:?}\n{stderr}"))
                .1
        })
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::Deserializer::from_str(&json)
        .into_iter::<Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("a detail is not JSON ({e}):\n{stderr}")))
        .collect()
}

/// The checks a failed command's error must pass: details decoded, and what `expect-error`
/// names.
fn check_error(block: &Block, stderr: &str, job: &str) {
    let ctx = format!("docs/ops.md:{}", block.line);
    let details = error_details(stderr);
    let error_info = "type.googleapis.com/google.rpc.ErrorInfo";
    assert!(
        details.iter().any(|d| d["@type"] == error_info),
        "{ctx}: no decoded ErrorInfo:\n{stderr}"
    );
    for detail in &details {
        // grpcurl's form for a type the server did not describe: `@error` and raw `@value`.
        assert!(
            detail.get("@error").is_none() && detail.get("@value").is_none(),
            "{ctx}: a detail grpcurl could not decode:\n{stderr}"
        );
    }
    let Some((reason, pairs)) = &block.expect_error else {
        return;
    };
    let info = details.iter().find(|d| d["@type"] == error_info).unwrap();
    assert_eq!(info["reason"], reason.as_str(), "{ctx}:\n{stderr}");
    for (key, value) in pairs {
        let value = value.replace("$JOB", job);
        if key == "violation" {
            let named = details
                .iter()
                .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
                .flat_map(|d| d["fieldViolations"].as_array().cloned().unwrap_or_default())
                .any(|v| v["field"] == value.as_str());
            assert!(
                named,
                "{ctx}: no BadRequest violation of {value}:\n{stderr}"
            );
        } else {
            assert_eq!(
                info["metadata"][key.as_str()],
                value.as_str(),
                "{ctx}: ErrorInfo.metadata.{key}:\n{stderr}"
            );
        }
    }
}

/// The checks a command's successful output must pass, by RPC.
fn check_output(block: &Block, rpc: &str, stdout: &str, job: &str) -> Option<String> {
    let ctx = format!("docs/ops.md:{} ({rpc})", block.line);
    match rpc {
        "list" => {
            for service in [SERVICE, "grpc.health.v1.Health"] {
                assert!(
                    stdout.lines().any(|l| l.trim() == service),
                    "{ctx}: {service} not listed:\n{stdout}"
                );
            }
            return None;
        }
        "describe" => {
            assert!(
                stdout.contains(" is a service:") || stdout.contains(" is a message:"),
                "{ctx}: not a description:\n{stdout}"
            );
            if stdout.contains(" is a service:") {
                for required in REQUIRED_RPCS.iter().filter(|r| !r.contains('/')) {
                    assert!(
                        stdout.contains(&format!("rpc {required} (")),
                        "{ctx}: rpc {required} not described:\n{stdout}"
                    );
                }
            }
            return None;
        }
        _ => {}
    }
    let messages = json_messages(stdout);
    assert!(!messages.is_empty(), "{ctx}: no response printed");
    let first = &messages[0];
    let last = messages.last().unwrap();
    match rpc {
        "grpc.health.v1.Health/Check" => {
            assert_eq!(str_at(first, "/status"), "SERVING", "{ctx}");
        }
        "ValidateDataset" => {
            assert_eq!(
                str_at(first, "/report/format"),
                "DATASET_FORMAT_CHAT",
                "{ctx}"
            );
            // uint64 arrives as a string, as the runbook says.
            assert_eq!(str_at(first, "/report/training/examples"), "13", "{ctx}");
            assert!(
                first.pointer("/report/errorCount").is_none(),
                "{ctx}: {first:#}"
            );
            assert!(
                first["report"]["estimatedCostUsd"].as_f64().unwrap() > 0.0,
                "{ctx}"
            );
        }
        "StartTraining" => {
            let id = str_at(first, "/job/id");
            assert!(id.starts_with("job-"), "{ctx}: job id {id:?}");
            assert!(
                str_at(first, "/job/upstreamId").starts_with("ftjob-"),
                "{ctx}"
            );
            if block.sets_job {
                return Some(id.to_owned());
            }
        }
        "GetJob" => assert_eq!(str_at(first, "/job/id"), job, "{ctx}"),
        "ListJobs" => {
            let jobs = first["jobs"].as_array().expect("jobs");
            assert!(
                jobs.iter().any(|j| j["id"] == job),
                "{ctx}: {job} not listed: {first:#}"
            );
        }
        "WatchJob" => {
            assert_eq!(str_at(first, "/snapshot/id"), job, "{ctx}");
            let sequences: Vec<u64> = messages
                .iter()
                .filter_map(|m| m.pointer("/event/sequence"))
                .map(|s| s.as_str().expect("int64 as string").parse().unwrap())
                .collect();
            assert!(!sequences.is_empty(), "{ctx}: no events");
            assert!(
                sequences.windows(2).all(|w| w[0] < w[1]),
                "{ctx}: events out of order: {sequences:?}"
            );
            match block.after_sequence {
                Some(after) => assert!(
                    sequences.iter().all(|s| *s > after),
                    "{ctx}: events at or before {after}: {sequences:?}"
                ),
                None => assert_eq!(sequences[0], 1, "{ctx}"),
            }
            assert_eq!(
                str_at(last, "/event/job/state"),
                "JOB_STATE_SUCCEEDED",
                "{ctx}: the watch must end with the succeeded job: {last:#}"
            );
            assert!(
                str_at(last, "/event/job/fineTunedModel").starts_with("ft:"),
                "{ctx}"
            );
        }
        "CancelJob" => {
            assert_eq!(str_at(first, "/job/id"), job, "{ctx}");
            if block.expect_cancelled {
                assert_eq!(str_at(first, "/job/state"), "JOB_STATE_CANCELLED", "{ctx}");
            }
        }
        "ListTiers" => {
            let names: Vec<&str> = first["tiers"]
                .as_array()
                .expect("tiers")
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            for tier in ["fast", "pro", "auto"] {
                assert!(names.contains(&tier), "{ctx}: no tier {tier}: {names:?}");
            }
        }
        "PromoteModel" => {
            assert!(str_at(first, "/tier/model").starts_with("ft:"), "{ctx}");
            assert_eq!(str_at(first, "/tier/promotedFromJob"), job, "{ctx}");
        }
        "Complete" => {
            assert!(
                !str_at(first, "/completion/text").is_empty(),
                "{ctx}: empty text"
            );
            assert!(!str_at(first, "/completion/model").is_empty(), "{ctx}");
        }
        "StreamComplete" => {
            let deltas: String = messages
                .iter()
                .filter_map(|m| m["delta"].as_str())
                .collect();
            assert!(!deltas.is_empty(), "{ctx}: no deltas");
            assert!(last.get("completion").is_some(), "{ctx}: {last:#}");
            if let Some(text) = last.pointer("/completion/text").and_then(Value::as_str) {
                assert_eq!(deltas, text, "{ctx}: the deltas are not the text");
            }
        }
        "GetTierStats" => {
            let stats = first["stats"].as_array().expect("stats");
            assert!(!stats.is_empty(), "{ctx}: no stats");
            // -emit-defaults: zero counters are printed too.
            for key in ["requests", "errors", "thumbsUp", "thumbsDown", "costUsd"] {
                assert!(stats[0].get(key).is_some(), "{ctx}: no {key}: {first:#}");
            }
        }
        other => panic!("{ctx}: the test has no checks for {other}: add them"),
    }
    None
}

#[test]
fn every_runbook_command_works_as_documented() {
    let grpcurl = common::find_grpcurl();
    let grpcurl_dir = grpcurl.parent().unwrap().to_path_buf();
    let runbook = std::fs::read_to_string(repo_root().join("docs/ops.md")).unwrap();
    let blocks = parse_runbook(&runbook);
    let fences = runbook.lines().filter(|l| l.trim() == "```bash").count();
    assert_eq!(blocks.len(), fences, "every ```bash block is parsed");
    assert!(!blocks.is_empty());

    let server = Server::start();
    let mut job = String::new();
    let mut ran = 0;
    let mut rpcs = BTreeSet::new();
    for block in &blocks {
        let ctx = format!("docs/ops.md:{}", block.line);
        assert!(
            block.command.trim_start().starts_with("grpcurl "),
            "{ctx}: a runbook block is one grpcurl command:\n{}",
            block.command
        );
        if block.command.contains("$JOB") {
            assert!(
                !job.is_empty(),
                "{ctx}: uses $JOB before a block marked `<!-- runbook: sets JOB -->`"
            );
        }
        let rpc = rpc_of(&block.command);
        let out = run_block(&block.command, &grpcurl_dir, &server.addr, &job);
        assert_eq!(
            out.code,
            block.expect_exit,
            "{ctx}: `{}` exited {} (expected {})\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
            block.command.trim(),
            out.code,
            block.expect_exit,
            out.stdout,
            out.stderr,
            server.log()
        );
        if block.expect_exit == 0 {
            assert!(
                block.expect_error.is_none(),
                "{ctx}: `expect-error` needs `expect-exit`"
            );
            assert!(!out.stdout.trim().is_empty(), "{ctx}: no output");
            if let Some(id) = check_output(block, &rpc, &out.stdout, &job) {
                job = id;
            }
        } else {
            assert!(
                out.stderr.contains("ERROR:") && out.stderr.contains("Code:"),
                "{ctx}: no gRPC error on stderr:\n{}",
                out.stderr
            );
            if block.expect_exit == 64 + 9 {
                assert!(out.stderr.contains("FailedPrecondition"), "{}", out.stderr);
            }
            check_error(block, &out.stderr, &job);
        }
        if block.sets_job {
            assert!(!job.is_empty(), "{ctx}: marked `sets JOB` but set none");
        }
        rpcs.insert(rpc);
        ran += 1;
    }

    assert_eq!(ran, fences, "every ```bash block in docs/ops.md was run");
    for required in REQUIRED_RPCS {
        assert!(
            rpcs.contains(*required),
            "docs/ops.md does not show {required}; shown: {rpcs:?}"
        );
    }
    for verb in ["list", "describe"] {
        assert!(rpcs.contains(verb), "docs/ops.md does not show `{verb}`");
    }

    let mut server = server;
    let status = server.stop().expect("the server exits on SIGTERM");
    assert!(
        status.success(),
        "server exit: {status:?}\n{}",
        server.log()
    );
}
