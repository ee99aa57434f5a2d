//! Datasets stored by content: `<data dir>/datasets/<sha256>.jsonl`.
//!
//! Uploads stream to a temporary file in the same directory while hashing, and are
//! renamed into place only when complete and verified, so a crash or a cancelled
//! upload never leaves a partial dataset under a real id.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Missing};

/// The dataset files, named by the SHA-256 of their content; cheap to clone.
#[derive(Debug, Clone)]
pub struct DatasetStore {
    dir: PathBuf,
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
        Ok(DatasetStore { dir })
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
    pub fn path(&self, id: &str) -> Result<PathBuf, Error> {
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
        if !path.is_file() {
            return Err(Error::NotFound {
                what: format!("dataset {id}"),
                missing: Missing::Dataset(id.to_owned()),
            });
        }
        Ok(path)
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
        Ok(StoredDataset {
            id,
            size_bytes: self.size,
            already_present,
        })
    }
}
