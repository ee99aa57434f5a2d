//! What people read, through the binaries: `finetune watch` on a job from start to end
//! (plain, as when piped), errors in plain words, and the server's logs in a file.

use crate::common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `finetune serve --emulator` on a free port, its logs in `log`. Returns it and its address.
fn serve(data_dir: &std::path::Path, log: &std::path::Path, color: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args([
            "serve",
            "--emulator",
            "--emulator-time-scale",
            "200",
            "--poll-interval-seconds",
            "0.1",
        ])
        .env("FINETUNE_ADDR", "127.0.0.1:0")
        .env("FINETUNE_DATA_DIR", data_dir)
        .env("FINETUNE_LOG_COLOR", color)
        .env("RUST_LOG", "info")
        .env_remove("OPENAI_API_KEY")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let addr = common::listening_address(&mut child);
    (child, addr)
}

fn stop(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finetune(addr: &str, args: &[&str]) -> Output {
    // Unlike `common::finetune`, a FINETUNE_TOKEN of the environment running the tests is
    // not passed on: the wording compared here must not depend on it.
    common::finetune_command(Some(addr), args)
        .env_remove("FINETUNE_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn a_watched_job_reads_one_line_per_event_and_the_logs_in_a_file_are_plain() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let (mut server, addr) = serve(&dir.path().join("data"), &log, "auto");
    let dataset = common::repo_file("reference/datasets/openai-dotnet_fine_tuning_sample.jsonl");
    let train = finetune(
        &addr,
        &[
            "train",
            dataset.to_str().unwrap(),
            "--model",
            "gpt-4o-mini-2024-07-18",
            "--yes",
        ],
    );
    assert_eq!(
        train.status.code(),
        Some(0),
        "{}",
        common::text(&train.stderr)
    );
    assert!(
        common::text(&train.stdout).contains(": 10 examples, "),
        "{}",
        common::text(&train.stdout)
    );

    let watch = finetune(&addr, &["watch"]);
    let out = common::text(&watch.stdout);
    assert_eq!(
        watch.status.code(),
        Some(0),
        "{out}{}",
        common::text(&watch.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("job job-"), "{out}");
    assert!(lines[0].contains(" validating_files on ") || lines[0].contains(" running on "));
    // OpenAI's step text once, not behind a second "step N/M" of ours.
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" step 1/100: training loss=")),
        "{out}"
    );
    assert!(!out.contains("Step "), "no repeated step prefix: {out}");
    assert!(!out.contains("step 0/0"), "{out}");
    // Each checkpoint once, right after its step, all before OpenAI's end message.
    assert!(!out.contains("Checkpoint created"), "{out}");
    let checkpoints: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains(" checkpoint at step "))
        .collect();
    assert_eq!(checkpoints.len(), 3, "{out}");
    let completed = lines
        .iter()
        .position(|l| l.ends_with(" The job has successfully completed"))
        .unwrap_or_else(|| panic!("{out}"));
    for &i in &checkpoints {
        let step = lines[i].split(" checkpoint at step ").nth(1).unwrap();
        let step = step.split(':').next().unwrap();
        assert!(
            lines[i - 1].contains(&format!(" step {step}/100: ")),
            "checkpoint {step} follows its step: {out}"
        );
        assert!(i < completed, "{out}");
    }
    // An ETA only on step lines, and never on the last step.
    for l in &lines {
        if l.contains(" left)") {
            assert!(l.contains(" step ") && !l.contains(" step 100/100"), "{l}");
        }
    }
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("succeeded: ft:gpt-4o-mini-2024-07-18:"),
        "{out}"
    );
    assert!(!last.contains("left"), "{last}");

    let jobs = finetune(&addr, &["jobs"]);
    let listed = common::text(&jobs.stdout);
    assert!(listed.contains(" succeeded "), "{listed}");
    assert!(!listed.contains("JOB_STATE_"), "{listed}");

    let missing = finetune(&addr, &["watch", "job-doesnotexist"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        common::text(&missing.stderr).trim_end(),
        "finetune watch: not found: job job-doesnotexist (no such job; `finetune jobs` lists them)"
    );
    let cancel = finetune(&addr, &["cancel", "job-doesnotexist"]);
    assert_eq!(
        common::text(&cancel.stderr).trim_end(),
        "finetune cancel: not found: job job-doesnotexist (no such job; `finetune jobs` lists them)"
    );

    stop(&mut server);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("training job created"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "no colour in a file: {logs}");
    assert!(logs.contains("upstream_id=ftjob-"), "{logs}");
    assert!(!logs.contains("Some("), "Display, not Debug: {logs}");
}

#[test]
fn log_color_always_colours_even_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let (mut server, _) = serve(&dir.path().join("data"), &log, "always");
    stop(&mut server);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("\u{1b}["), "{logs}");
}
