//! The emulator's world on disk, when it has a data dir: `state.json` (files' metadata,
//! deleted files, jobs and the clock's anchor) and `files/<id>` (each file's bytes).
//!
//! Why a JSON snapshot rewritten after every change, and not SQLite: the world is a few
//! records per job (a job's events, checkpoints and model are derived from its record and
//! the clock), so the whole of it is small; a snapshot keeps the in-memory store as the
//! one model, with no schema to keep beside it. It is written to a temporary file and
//! renamed over the old one, so a kill at any moment leaves the old or the new snapshot,
//! never half of one. File bytes are written the same way, once, before the snapshot
//! that names them. Uploads in progress, the prompt cache, faults and recorded requests
//! stay in memory: they are short-lived upstream too.
//!
//! Time across restarts: the emulated clock keeps running while the emulator is down, as
//! OpenAI's does while a client is away. The snapshot holds an anchor (a wall time and the
//! emulated time then); a restart continues from it at `time_scale` emulated seconds per
//! wall second, so a job that was running is where wall time says it should be (finished,
//! if the downtime was long enough). A wall clock set back never runs emulated time back.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use serde::{Deserialize, Serialize};

use crate::clock::Anchor;
use crate::files::{Files, StoredFile};
use crate::jobs::Jobs;

/// Format of `state.json`; another number is refused, not guessed at.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct FileRecord {
    id: String,
    filename: String,
    purpose: String,
    bytes: u64,
    created_at: i64,
    expires_at: Option<i64>,
}

/// `state.json`. `J` is `&Jobs` when saving and `Jobs` when loading.
#[derive(Serialize, Deserialize)]
struct Snapshot<J> {
    version: u32,
    clock: Anchor,
    files: Vec<FileRecord>,
    /// Deleted file ids and the emulated time each went.
    deleted: HashMap<String, f64>,
    jobs: J,
}

/// What a data dir held at start-up.
pub(crate) struct Loaded {
    pub(crate) anchor: Anchor,
    pub(crate) files: Files,
    pub(crate) jobs: Jobs,
}

/// The data dir of an emulator.
#[derive(Debug)]
pub(crate) struct Disk {
    dir: PathBuf,
    blobs: PathBuf,
    state: PathBuf,
}

impl Disk {
    /// Opens (creating) `dir` and reads what it holds. An unreadable or corrupt state is an
    /// error naming the file: starting empty would silently lose the world.
    pub(crate) fn open(dir: &Path) -> std::io::Result<(Disk, Option<Loaded>)> {
        let disk = Disk {
            dir: dir.to_owned(),
            blobs: dir.join("files"),
            state: dir.join("state.json"),
        };
        std::fs::create_dir_all(&disk.blobs).map_err(|e| {
            annotate(
                e,
                format!(
                    "cannot create the emulator's data dir {}",
                    disk.blobs.display()
                ),
            )
        })?;
        let loaded = disk.load()?;
        Ok((disk, loaded))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn load(&self) -> std::io::Result<Option<Loaded>> {
        let raw = match std::fs::read(&self.state) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(annotate(
                    e,
                    format!("cannot read the emulator's state {}", self.state.display()),
                ));
            }
        };
        let corrupt = |why: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the emulator's state {} is corrupt ({why}); move it away to start with an empty emulator",
                    self.state.display()
                ),
            )
        };
        let snapshot: Snapshot<Jobs> =
            serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
        if snapshot.version != VERSION {
            return Err(corrupt(format!(
                "format version {}, this emulator reads {VERSION}",
                snapshot.version
            )));
        }
        let mut items = Vec::with_capacity(snapshot.files.len());
        for record in snapshot.files {
            let path = self
                .blob_path(&record.id)
                .map_err(|e| corrupt(e.to_string()))?;
            let data = std::fs::read(&path).map_err(|e| {
                annotate(
                    e,
                    format!(
                        "cannot read {}, the bytes of file {} named in {}",
                        path.display(),
                        record.id,
                        self.state.display()
                    ),
                )
            })?;
            if data.len() as u64 != record.bytes {
                return Err(corrupt(format!(
                    "{} holds {} bytes, the state says {}",
                    path.display(),
                    data.len(),
                    record.bytes
                )));
            }
            items.push(StoredFile {
                id: record.id,
                filename: record.filename,
                purpose: record.purpose,
                data: Bytes::from(data),
                created_at: record.created_at,
                expires_at: record.expires_at,
            });
        }
        Ok(Some(Loaded {
            anchor: snapshot.clock,
            files: Files::restore(items, snapshot.deleted),
            jobs: snapshot.jobs,
        }))
    }

    /// Writes the whole store over the last snapshot. Files a job published (its results)
    /// are left out: they are derived from the job and published again after a restart.
    pub(crate) fn save(&self, files: &Files, jobs: &Jobs, anchor: Anchor) -> std::io::Result<()> {
        let results = jobs.results_file_ids();
        let snapshot = Snapshot {
            version: VERSION,
            clock: anchor,
            files: files
                .stored()
                .filter(|f| !results.contains(f.id.as_str()))
                .map(|f| FileRecord {
                    id: f.id.clone(),
                    filename: f.filename.clone(),
                    purpose: f.purpose.clone(),
                    bytes: f.data.len() as u64,
                    created_at: f.created_at,
                    expires_at: f.expires_at,
                })
                .collect(),
            deleted: files.deleted().clone(),
            jobs,
        };
        let json = serde_json::to_vec(&snapshot)?;
        write_atomic(&self.dir, &self.state, &json)
            .map_err(|e| annotate(e, format!("cannot write {}", self.state.display())))
    }

    /// Stores a file's bytes; call before the snapshot that names it.
    pub(crate) fn write_file(&self, id: &str, data: &[u8]) -> std::io::Result<()> {
        let path = self.blob_path(id)?;
        write_atomic(&self.blobs, &path, data)
            .map_err(|e| annotate(e, format!("cannot write {}", path.display())))
    }

    /// Removes a deleted file's bytes; call after the snapshot that no longer names it.
    pub(crate) fn remove_file(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.blob_path(id)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn blob_path(&self, id: &str) -> std::io::Result<PathBuf> {
        // Ids are the emulator's own (`file-` and letters); anything else must not
        // become a path.
        let safe = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if safe {
            Ok(self.blobs.join(id))
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{id:?} is not a file id"),
            ))
        }
    }
}

/// Writes `path` through a temporary file in `dir` and a rename.
fn write_atomic(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn annotate(e: std::io::Error, what: String) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}
