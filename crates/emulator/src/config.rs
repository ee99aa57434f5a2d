//! How an emulator is configured.

use std::path::PathBuf;

/// How the emulator behaves. Durations are in emulated seconds; the emulated clock runs
/// `time_scale` times faster than the real one.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Emulated seconds per real second: 1.0 runs jobs in real time, 100.0 makes a
    /// 220-second job take 2.2 s. Every timestamp the API returns is on this clock.
    pub time_scale: f64,
    /// Organization name: the third segment of `ft:` model names. The `organization_id`
    /// of jobs is derived from it.
    pub org: String,
    /// When set, requests with another bearer key get OpenAI's 401 `invalid_api_key`.
    /// When unset any bearer key is accepted (a missing header is still a 401).
    pub api_key: Option<String>,
    /// Time a job spends in `validating_files`.
    pub validating_secs: f64,
    /// Time a job spends `queued`.
    pub queued_secs: f64,
    /// Time per training step.
    pub step_secs: f64,
    /// Time between streamed chat chunks.
    pub token_secs: f64,
    /// Where the emulator keeps its files, jobs and models across restarts (see
    /// `persist.rs`); None keeps them in memory only.
    pub data_dir: Option<PathBuf>,
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            time_scale: 1.0,
            org: "finetune-emulator".to_owned(),
            api_key: None,
            validating_secs: 10.0,
            queued_secs: 10.0,
            step_secs: 2.0,
            token_secs: 0.02,
            data_dir: None,
        }
    }
}
