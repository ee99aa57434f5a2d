//! Datasets stored by content: `<data dir>/datasets/<sha256>.jsonl`.
//!
//! Uploads stream to a temporary file in the same directory while hashing, and are
//! renamed into place only when complete and verified, so a crash or a cancelled
//! upload never leaves a partial dataset under a real id.
//!
//! With replicas, a dataset uploaded through one is trained or validated through
//! another: the bytes are then also saved in the shared database ([`SharedDatasets`]),
//! and the directory is each replica's cache of them, filled on first use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Missing};

/// Dataset bytes kept where every replica reads them (the shared database), beside each
/// replica's directory of files.
#[async_trait::async_trait]
pub trait SharedDatasets: Send + Sync + 'static {
    /// Saves the file at `path` as dataset `sha256`; nothing when it is saved already.
    /// A dataset is readable only once all of it is saved.
    async fn save_dataset(&self, sha256: &str, path: &Path) -> Result<(), Error>;
    /// Writes dataset `sha256` to `dest` (a new file); false when it was never saved.
    async fn load_dataset(&self, sha256: &str, dest: &Path) -> Result<bool, Error>;
}

/// The dataset files, named by the SHA-256 of their content; cheap to clone.
#[derive(Clone)]
pub struct DatasetStore {
    dir: PathBuf,
    shared: Option<Arc<dyn SharedDatasets>>,
}

impl std::fmt::Debug for DatasetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetStore")
            .field("dir", &self.dir)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

/// The result of storing an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDataset {
    /// The dataset id: the hex SHA-256 of its bytes.
    pub id: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// True when identical bytes were stored before (the upload was deduplicated).
    pub already_present: bool,
}

/// What the client announced about an upload, checked at the end.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Hex SHA-256 the bytes must have; the upload is refused otherwise.
    pub sha256: Option<String>,
    /// Size the upload must have; it is refused otherwise.
    pub size_bytes: Option<u64>,
}

impl DatasetStore {
    /// Opens (creating if needed) the dataset directory under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<DatasetStore, Error> {
        let dir = data_dir.join("datasets");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display())))?;
        Ok(DatasetStore { dir, shared: None })
    }

    /// This store with its bytes also saved to, and read from, `shared`.
    pub fn with_shared(mut self, shared: Arc<dyn SharedDatasets>) -> DatasetStore {
        self.shared = Some(shared);
        self
    }

    /// The directory holding the datasets.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores bytes given inline (content-addressed, like an upload).
    pub async fn put(&self, bytes: &[u8], max_bytes: u64) -> Result<StoredDataset, Error> {
        let mut upload = self.begin(max_bytes).await?;
        upload.write(bytes).await?;
        upload.finish(&Expected::default()).await
    }

    /// The file of a stored dataset. Ids are validated so they cannot name other paths.
    /// A dataset another replica stored is fetched from the shared database first.
    pub async fn path(&self, id: &str) -> Result<PathBuf, Error> {
        if id.len() != 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::invalid(
                "dataset_id",
                "must be the 64-character lowercase hex SHA-256 UploadDataset returned",
            ));
        }
        let path = self.dir.join(format!("{id}.jsonl"));
        if path.is_file() || self.fetch(id, &path).await? {
            return Ok(path);
        }
        Err(Error::NotFound {
            what: format!("dataset {id}"),
            missing: Missing::Dataset(id.to_owned()),
        })
    }

    /// Copies dataset `id` from the shared database to `path`, through a temporary file
    /// renamed into place, so a reader never sees part of it; false when it is not there.
    async fn fetch(&self, id: &str, path: &Path) -> Result<bool, Error> {
        let Some(shared) = &self.shared else {
            return Ok(false);
        };
        let tmp = tempfile::Builder::new()
            .prefix(".fetch-")
            .suffix(".part")
            .tempfile_in(&self.dir)
            .map_err(|e| {
                Error::Io(format!(
                    "cannot create a file in {}: {e}",
                    self.dir.display()
                ))
            })?
            .into_temp_path();
        if !shared.load_dataset(id, &tmp).await? {
            return Ok(false);
        }
        tmp.persist(path)
            .map_err(|e| Error::Io(format!("storing dataset {id} failed: {e}")))?;
        Ok(true)
    }

    /// Starts an upload of at most `max_bytes`.
    pub async fn begin(&self, max_bytes: u64) -> Result<Upload, Error> {
        let tmp = tempfile::Builder::new()
            .prefix(".upload-")
            .suffix(".part")
            .tempfile_in(&self.dir)
            .map_err(|e| {
                Error::Io(format!(
                    "cannot create an upload file in {}: {e}",
                    self.dir.display()
                ))
            })?;
        let (file, path) = tmp.into_parts();
        Ok(Upload {
            file: tokio::fs::File::from_std(file),
            path,
            hasher: Sha256::new(),
            size: 0,
            max_bytes,
            dir: self.dir.clone(),
            shared: self.shared.clone(),
        })
    }
}

/// An upload in progress; dropping it deletes the partial file.
pub struct Upload {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    hasher: Sha256,
    size: u64,
    max_bytes: u64,
    dir: PathBuf,
    shared: Option<Arc<dyn SharedDatasets>>,
}

impl Upload {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.size += chunk.len() as u64;
        if self.size > self.max_bytes {
            return Err(Error::ResourceExhausted(format!(
                "dataset exceeds the upload limit of {} bytes (--max-dataset-bytes)",
                self.max_bytes
            )));
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| Error::Io(format!("writing the upload failed: {e}")))
    }

    /// Verifies and stores the upload under its SHA-256.
    pub async fn finish(mut self, expected: &Expected) -> Result<StoredDataset, Error> {
        self.file
            .flush()
            .await
            .map_err(|e| Error::Io(format!("writing the upload failed: {e}")))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| Error::Io(format!("syncing the upload failed: {e}")))?;
        let id = hex::encode(self.hasher.finalize());
        if let Some(want) = expected.size_bytes {
            if want != self.size {
                return Err(Error::DataLoss(format!(
                    "received {} bytes but the header announced {want}; nothing was stored",
                    self.size
                )));
            }
        }
        if let Some(want) = &expected.sha256 {
            if !want.eq_ignore_ascii_case(&id) {
                return Err(Error::DataLoss(format!(
                    "received bytes hash to sha256 {id}, not the announced {want}; nothing was stored"
                )));
            }
        }
        let dest = self.dir.join(format!("{id}.jsonl"));
        let already_present = dest.is_file();
        if !already_present {
            self.path
                .persist(&dest)
                .map_err(|e| Error::Io(format!("storing the upload failed: {e}")))?;
        }
        // Saved for the other replicas before the id is handed out, so that any of them
        // can train on it.
        if let Some(shared) = &self.shared {
            shared.save_dataset(&id, &dest).await?;
        }
        Ok(StoredDataset {
            id,
            size_bytes: self.size,
            already_present,
        })
    }
}
