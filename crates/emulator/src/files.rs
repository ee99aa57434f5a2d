//! The files and Uploads the emulator holds: plain state, kept in the store and on disk.
//! The API's handlers are in [`crate::file_routes`].

use std::collections::HashMap;

use axum::body::Bytes;
use axum::response::Response;
use serde::Serialize;

use crate::api::{self, ApiError, ApiResult, json};
use crate::clock::ts;

/// Largest file `POST /files` takes ("a single file can be up to 512 MB").
pub(crate) const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;
/// Largest part of an Upload.
pub(crate) const MAX_PART_BYTES: u64 = 64 * 1024 * 1024;
/// A stored file.
#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    pub(crate) id: String,
    pub(crate) filename: String,
    pub(crate) purpose: String,
    pub(crate) data: Bytes,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
}

/// `OpenAIFile`, fields in the order OpenAI sends them.
#[derive(Debug, Serialize)]
pub(crate) struct FileObject<'a> {
    object: &'static str,
    id: &'a str,
    purpose: &'a str,
    filename: &'a str,
    bytes: usize,
    created_at: i64,
    expires_at: Option<i64>,
    status: &'static str,
    status_details: Option<&'static str>,
}

impl StoredFile {
    pub(crate) fn object(&self) -> FileObject<'_> {
        FileObject {
            object: "file",
            id: &self.id,
            purpose: &self.purpose,
            filename: &self.filename,
            bytes: self.data.len(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            status: "processed",
            status_details: None,
        }
    }
}

/// Files in creation order, plus when deleted ones went (a job whose training file is
/// deleted before validation fails).
#[derive(Default)]
pub(crate) struct Files {
    items: Vec<StoredFile>,
    deleted: HashMap<String, f64>,
}

impl Files {
    /// Files read back from a data dir.
    pub(crate) fn restore(items: Vec<StoredFile>, deleted: HashMap<String, f64>) -> Files {
        Files { items, deleted }
    }

    pub(crate) fn insert(&mut self, file: StoredFile) {
        self.items.push(file);
    }

    /// Every stored file, expired ones included.
    pub(crate) fn stored(&self) -> impl Iterator<Item = &StoredFile> {
        self.items.iter()
    }

    /// Deleted file ids and when each went.
    pub(crate) fn deleted(&self) -> &HashMap<String, f64> {
        &self.deleted
    }

    pub(crate) fn was_deleted(&self, id: &str) -> bool {
        self.deleted.contains_key(id)
    }

    /// A stored file's bytes, expired or not (a check cut short by a restart reads them
    /// again; whether the file was gone in time is decided when the job is validated).
    pub(crate) fn bytes(&self, id: &str) -> Option<Bytes> {
        self.items
            .iter()
            .find(|f| f.id == id)
            .map(|f| f.data.clone())
    }

    /// The file, unless deleted or expired at `now`.
    pub(crate) fn get(&self, id: &str, now: f64) -> Option<&StoredFile> {
        self.items
            .iter()
            .find(|f| f.id == id && f.expires_at.is_none_or(|e| ts(now) < e))
    }

    pub(crate) fn remove(&mut self, id: &str, now: f64) -> bool {
        if self.get(id, now).is_none() {
            return false;
        }
        self.items.retain(|f| f.id != id);
        self.deleted.insert(id.to_owned(), now);
        true
    }

    /// When the file was deleted (or expired), if it was.
    pub(crate) fn gone_at(&self, id: &str) -> Option<f64> {
        if let Some(&t) = self.deleted.get(id) {
            return Some(t);
        }
        self.items
            .iter()
            .find(|f| f.id == id)
            .and_then(|f| f.expires_at)
            .map(|e| e as f64)
    }

    pub(crate) fn live(&self, now: f64) -> impl Iterator<Item = &StoredFile> {
        self.items
            .iter()
            .filter(move |f| f.expires_at.is_none_or(|e| ts(now) < e))
    }
}

pub(crate) fn new_file_id() -> String {
    format!("file-{}", api::random_id(22))
}

/// An Upload in progress.
pub(crate) struct Upload {
    pub(crate) id: String,
    pub(crate) filename: String,
    pub(crate) purpose: String,
    pub(crate) bytes: i64,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) status: UploadStatus,
    pub(crate) parts: HashMap<String, Bytes>,
    pub(crate) file_id: Option<String>,
    /// `expires_after.seconds` of the file it makes, after its `created_at`.
    pub(crate) file_expires_after: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadStatus {
    Pending,
    Completed,
    Cancelled,
}

impl Upload {
    pub(crate) fn status(&self, now: f64) -> &'static str {
        match self.status {
            UploadStatus::Pending if ts(now) >= self.expires_at => "expired",
            UploadStatus::Pending => "pending",
            UploadStatus::Completed => "completed",
            UploadStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn render(&self, now: f64, files: &Files) -> Response {
        #[derive(Serialize)]
        struct UploadObject<'a> {
            id: &'a str,
            object: &'static str,
            bytes: i64,
            created_at: i64,
            filename: &'a str,
            purpose: &'a str,
            status: &'static str,
            expires_at: i64,
            #[serde(skip_serializing_if = "Option::is_none")]
            file: Option<FileObject<'a>>,
        }
        let file = self
            .file_id
            .as_deref()
            .and_then(|id| files.get(id, now))
            .map(StoredFile::object);
        json(&UploadObject {
            id: &self.id,
            object: "upload",
            bytes: self.bytes,
            created_at: self.created_at,
            filename: &self.filename,
            purpose: &self.purpose,
            status: self.status(now),
            expires_at: self.expires_at,
            file,
        })
    }

    pub(crate) fn require_pending(&self, now: f64, action: &str) -> ApiResult<()> {
        match self.status(now) {
            "pending" => Ok(()),
            status => Err(ApiError::invalid(format!(
                "Cannot {action} Upload {} because it is {status}.",
                self.id
            ))),
        }
    }
}

pub(crate) type Uploads = HashMap<String, Upload>;
