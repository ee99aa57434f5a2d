//! The state every handler shares: the configuration, the emulated clock, the fault knobs
//! and the store (files, Uploads, jobs, the prompt cache, recorded requests), saved to the
//! data dir after each change. It names the state types, never a handler.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::api::{ApiError, derived_id};
pub(crate) use crate::clock::{Clock, ts};
use crate::config::EmulatorConfig;
use crate::faults::FaultControl;
use crate::files::{Files, Uploads};
use crate::jobs::{CheckWork, Jobs};
use crate::persist::Disk;
use crate::prompt_cache::PromptCache;

/// State shared by every handler.
#[derive(Clone)]
pub(crate) struct App(Arc<Shared>);

pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    pub(crate) org_id: String,
    pub(crate) clock: Clock,
    pub(crate) faults: FaultControl,
    store: Mutex<Store>,
    disk: Option<Disk>,
}

impl std::ops::Deref for App {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl App {
    /// The state of a new emulator, and the file checks a restart found unfinished (the
    /// caller runs them: running them is the jobs API's work).
    pub(crate) fn new(config: EmulatorConfig) -> std::io::Result<(App, Vec<CheckWork>)> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        if !(config.time_scale.is_finite() && config.time_scale > 0.0) {
            return Err(invalid("emulator time_scale must be a positive number"));
        }
        for d in [
            config.validating_secs,
            config.queued_secs,
            config.step_secs,
            config.token_secs,
        ] {
            if !(d.is_finite() && d >= 0.0) {
                return Err(invalid("emulator durations must be >= 0"));
            }
        }
        if config.org.is_empty() || config.org.contains(':') {
            return Err(invalid("emulator org must be non-empty and contain no ':'"));
        }
        let org_id = format!("org-{}", derived_id(&config.org, 24));
        let (disk, loaded) = match &config.data_dir {
            Some(dir) => {
                let (disk, loaded) = Disk::open(dir)?;
                (Some(disk), loaded)
            }
            None => (None, None),
        };
        let mut store = Store::default();
        let mut anchor = None;
        if let Some(loaded) = loaded {
            anchor = Some(loaded.anchor);
            store.files = loaded.files;
            store.jobs = loaded.jobs;
        }
        let clock = Clock::resume(config.time_scale, anchor);
        let pending = store.jobs.unfinished_checks(&store.files, clock.now());
        if let Some(disk) = &disk {
            tracing::info!(
                dir = %disk.dir().display(),
                files = store.files.stored().count(),
                jobs = store.jobs.len(),
                "emulator state loaded"
            );
        }
        let app = App(Arc::new(Shared {
            clock,
            org_id,
            faults: FaultControl::default(),
            store: Mutex::new(store),
            disk,
            config,
        }));
        Ok((app, pending))
    }

    /// Saves the store when the emulator has a data dir. Called after each change with
    /// the lock still held, so snapshots are written in the order of the changes. A
    /// failed save is logged, not answered: the change is made, only its durability lags.
    pub(crate) fn save(&self, store: &Store) {
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.save(&store.files, &store.jobs, self.clock.anchor()) {
                tracing::error!(error = %e, "the emulator could not save its state");
            }
        }
    }

    /// [`App::save`], taking the lock.
    pub(crate) fn save_now(&self) {
        let store = self.lock_store();
        self.save(&store);
    }

    /// Stores a new file's bytes before it is inserted (a 500 if that fails).
    pub(crate) fn write_file(&self, id: &str, data: &[u8]) -> Result<(), ApiError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        disk.write_file(id, data).map_err(|e| {
            tracing::error!(error = %e, "the emulator could not store a file");
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while storing the file.",
            )
            .kind("server_error")
        })
    }

    /// Drops a deleted file's bytes.
    pub(crate) fn remove_file(&self, id: &str) {
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.remove_file(id) {
                tracing::warn!(error = %e, file_id = %id, "the emulator could not remove a deleted file's bytes");
            }
        }
    }

    /// Keeps a request body for [`Emulator::last_requests`](crate::Emulator::last_requests).
    pub(crate) fn record(&self, route: &str, body: serde_json::Value) {
        let mut store = self.lock_store();
        let bodies = store.recorded.entry(route.to_owned()).or_default();
        if bodies.len() == RECORDED_PER_ROUTE {
            bodies.pop_front();
        }
        bodies.push_back(body);
    }

    /// The store as it is (jobs not brought up to date: see [`App::store_at`]).
    pub(crate) fn lock_store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store with every job brought up to the emulated time `now` (result files
    /// published, plans fixed), so reads see a consistent state.
    pub(crate) fn store_at(&self, now: f64) -> MutexGuard<'_, Store> {
        let mut store = self.lock_store();
        store.advance(now);
        store
    }
}

/// Everything the emulator holds, in memory.
#[derive(Default)]
pub(crate) struct Store {
    pub(crate) files: Files,
    pub(crate) uploads: Uploads,
    pub(crate) jobs: Jobs,
    pub(crate) prompt_cache: PromptCache,
    /// Request bodies by route, oldest first.
    pub(crate) recorded: BTreeMap<String, VecDeque<serde_json::Value>>,
}

/// Request bodies kept per route for [`Emulator::last_requests`](crate::Emulator::last_requests).
pub const RECORDED_PER_ROUTE: usize = 16;

impl Store {
    fn advance(&mut self, now: f64) {
        let Store { files, jobs, .. } = self;
        jobs.advance(now, files);
    }
}
