//! `finetune serve`'s configuration: each setting from its flag, else its environment
//! variable, else the `--config` file, else its default; provider keys from the environment
//! only, and never shown.

use crate::common::{self, vars};

use std::path::Path;
use std::process::Output;

use clap::CommandFactory;
use finetune::cli::Cli;
use finetune::config::ServeConfig;
use finetune_core::ports::RetryPolicy;
use finetune_providers::OpenAiConfig;
use finetune_providers::openai::OpenAi;

const KEY: &str = "sk-proj-CONFIGCANARY0123456789abcdef";

/// `finetune serve ARGS` in an environment holding only `env`.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = common::finetune_command(None, &["serve"]);
    command.args(args).env_clear().envs(env.iter().copied());
    command.output().expect("the binary runs")
}

/// The settings `serve --print-config` prints, parsed.
fn printed(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let out = serve(&[args, &["--print-config"]].concat(), env);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    toml::from_str(&common::text(&out.stdout)).expect("--print-config prints TOML")
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("finetune.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "drain-seconds = 3\nheartbeat-seconds = 4.5\nmax-watch-streams = 5\n\
         knowledge = [\"a.md\", \"b.md\"]\nemulator = true\n",
    );
    let settings = printed(
        &["--config", &file, "--drain-seconds", "1"],
        &[
            ("FINETUNE_DRAIN_SECONDS", "2"),
            ("FINETUNE_HEARTBEAT_SECONDS", "6"),
        ],
    );
    let int = |key: &str| settings[key].as_integer().unwrap();
    assert_eq!(
        int("drain-seconds"),
        1,
        "the flag beats the variable and the file"
    );
    assert_eq!(
        settings["heartbeat-seconds"].as_float(),
        Some(6.0),
        "the variable beats the file"
    );
    assert_eq!(int("max-watch-streams"), 5, "the file beats the default");
    assert_eq!(
        int("max-calls-per-caller"),
        256,
        "the default when nothing sets it"
    );
    assert_eq!(settings["emulator"].as_bool(), Some(true));
    assert_eq!(
        settings["knowledge"],
        toml::Value::from(vec!["a.md", "b.md"])
    );

    // FINETUNE_CONFIG names the file too, and a flag given after it still wins.
    let settings = printed(&["--max-watch-streams", "7"], &[("FINETUNE_CONFIG", &file)]);
    assert_eq!(settings["drain-seconds"].as_integer(), Some(3));
    assert_eq!(settings["max-watch-streams"].as_integer(), Some(7));
}

#[test]
fn printed_settings_are_a_config_file_giving_the_same_settings() {
    let flags = [
        "--addr",
        "127.0.0.1:7001",
        "--data-dir",
        "/srv/finetune",
        "--log-format",
        "json",
        "--log-color",
        "never",
        "--poll-interval-seconds",
        "2.5",
        "--openai-base-url",
        "http://127.0.0.1:9/v1",
        "--openai-organization",
        "org-a",
        "--openai-project",
        "proj_b",
        "--upload-threshold-bytes",
        "1048576",
        "--knowledge",
        "k.md",
        "--metrics-addr",
        "127.0.0.1:9090",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
        "--allow-unauthenticated",
    ];
    let from_flags = printed(&flags, &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), &toml::to_string(&from_flags).unwrap());
    assert_eq!(printed(&["--config", &file], &[]), from_flags);
    assert_eq!(from_flags["log-format"].as_str(), Some("json"));
    assert_eq!(from_flags["openai-organization"].as_str(), Some("org-a"));
}

/// What `finetune serve --config FILE` says on stderr, FILE holding `text`; it must be
/// a usage error (exit status 2).
fn refused(dir: &Path, text: &str) -> (String, String) {
    let file = write(dir, text);
    let out = serve(&["--config", &file], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out.stderr));
    (file, common::text(&out.stderr))
}

#[test]
fn an_unknown_key_in_the_file_is_an_error_naming_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (file, stderr) = refused(dir.path(), "addr = \"127.0.0.1:0\"\n\ndrain_seconds = 3\n");
    let expected = format!("config file {file}, line 3: unknown key `drain_seconds`");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("did you mean `drain-seconds`"), "{stderr}");

    let (file, stderr) = refused(dir.path(), "drain-seconds = \"soon\"\n");
    let expected =
        format!("config file {file}, line 1: invalid value \"soon\" for `drain-seconds`");
    assert!(stderr.contains(&expected), "{stderr}");

    let out = serve(
        &[
            "--config",
            &dir.path().join("absent.toml").to_string_lossy(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(common::text(&out.stderr).contains("absent.toml"));
}

#[test]
fn a_key_is_never_taken_from_a_file_or_a_flag_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stderr) = refused(dir.path(), &format!("openai-api-key = \"{KEY}\"\n"));
    assert!(
        stderr.contains("OPENAI_API_KEY") && stderr.contains("line 1"),
        "{stderr}"
    );
    assert!(!stderr.contains(KEY), "{stderr}");

    let out = serve(&["--openai-api-key", KEY], &[]);
    assert_eq!(out.status.code(), Some(2), "the command line takes no key");
    assert!(!common::text(&out.stderr).contains(KEY));

    let out = serve(&["--print-config"], &[("OPENAI_API_KEY", KEY)]);
    let stdout = common::text(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OPENAI_API_KEY is set"),
        "{stdout}"
    );
    assert!(!stdout.contains(KEY), "{stdout}");

    let config = ServeConfig::for_data_dir("data")
        .with_keys_from(vars(&[("OPENAI_API_KEY", KEY), ("ANTHROPIC_API_KEY", KEY)]));
    assert!(!format!("{config:?}").contains(KEY));
    let openai = config.openai(&RetryPolicy::default()).unwrap();
    assert!(!format!("{openai:?}").contains(KEY));
    assert!(!format!("{:?}", config.anthropic(&RetryPolicy::default())).contains(KEY));
}

#[test]
fn the_adapters_get_their_settings_from_the_configuration() {
    let retry = RetryPolicy {
        max_retries: 7,
        ..RetryPolicy::default()
    };
    let config = ServeConfig::for_data_dir("data");
    assert!(config.openai(&retry).is_none(), "no key, no OpenAI");
    assert!(config.anthropic(&retry).is_none(), "no key, no Anthropic");
    assert!(
        config
            .clone()
            .with_keys_from(vars(&[("OPENAI_API_KEY", "  ")]))
            .openai(&retry)
            .is_none(),
        "a blank key is no key"
    );

    let c = config
        .clone()
        .with_keys_from(vars(&[("OPENAI_API_KEY", " sk-test ")]))
        .openai(&retry)
        .unwrap();
    assert_eq!(c.api_key, "sk-test");
    assert_eq!(c.base_url, OpenAiConfig::DEFAULT_BASE_URL);
    assert_eq!((c.organization, c.project), (None, None));
    assert_eq!(
        c.upload_threshold_bytes,
        OpenAiConfig::DEFAULT_UPLOAD_THRESHOLD_BYTES
    );
    assert_eq!(c.retry.max_retries, 7);

    let mut set = config.clone();
    set.openai_base_url = Some("http://127.0.0.1:9/v1/".into());
    set.openai_project = Some("proj_c".into());
    set.upload_threshold_bytes = 1 << 20;
    let c = set
        .clone()
        .with_keys_from(vars(&[
            ("OPENAI_API_KEY", "sk-test"),
            ("OPENAI_ORGANIZATION", "org-b"),
        ]))
        .openai(&retry)
        .unwrap();
    assert_eq!(c.base_url, "http://127.0.0.1:9/v1");
    assert_eq!(
        c.organization.as_deref(),
        Some("org-b"),
        "the variable's other name"
    );
    assert_eq!(c.project.as_deref(), Some("proj_c"));
    assert_eq!(c.upload_threshold_bytes, 1 << 20);
    assert!(OpenAi::new(c).is_ok());

    set.openai_organization = Some("org-a".into());
    let c = set
        .with_keys_from(vars(&[
            ("OPENAI_API_KEY", "sk-test"),
            ("OPENAI_ORGANIZATION", "org-b"),
        ]))
        .openai(&retry)
        .unwrap();
    assert_eq!(
        c.organization.as_deref(),
        Some("org-a"),
        "OPENAI_ORG_ID wins"
    );

    let mut anthropic = config.with_keys_from(vars(&[("ANTHROPIC_API_KEY", "sk-ant-test")]));
    assert_eq!(
        anthropic.anthropic(&retry).unwrap().base_url,
        "https://api.anthropic.com"
    );
    anthropic.anthropic_base_url = Some("http://127.0.0.1:9/".into());
    let c = anthropic.anthropic(&retry).unwrap();
    assert_eq!(
        (c.api_key.as_str(), c.base_url.as_str()),
        ("sk-ant-test", "http://127.0.0.1:9/")
    );
    assert_eq!(c.retry.max_retries, 7);
}

#[test]
fn serve_help_names_every_settings_variable_and_where_keys_come_from() {
    let out = common::finetune(None, &["serve", "--help"]);
    assert!(out.status.success());
    let help = common::text(&out.stdout);
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let mut settings = 0;
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "print_config") {
            continue;
        }
        let var = arg
            .get_env()
            .unwrap_or_else(|| panic!("--{id} has no environment variable"));
        let var = var.to_str().unwrap();
        assert!(
            help.contains(&format!("[env: {var}=")),
            "{var} not in:\n{help}"
        );
        settings += 1;
    }
    assert!(settings >= 30, "only {settings} settings");
    assert!(
        help.contains("Provider API keys are read only from the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY): never from a flag or a file"),
        "{help}"
    );
}

#[test]
fn the_readme_config_file_example_loads() {
    let readme = std::fs::read_to_string(common::repo_file("README.md")).unwrap();
    let section = &readme[readme.find("## Configuration").unwrap()..];
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a TOML example in the Configuration section");
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), example);
    let settings = printed(&["--config", &file], &[]);
    let example: toml::Table = toml::from_str(example).unwrap();
    for (key, value) in &example {
        assert_eq!(settings.get(key), Some(value), "{key}");
    }
}

#[test]
fn a_file_naming_a_tls_certificate_without_its_key_is_refused() {
    // clap ties --tls-cert to --tls-key only on the command line; plaintext is no fallback.
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "tls-cert = \"server.pem\"\n");
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = serve(
        &[
            "--config",
            &file,
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            data,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out.stderr).contains("tls-cert and tls-key go together"));
}
