//! The Files API and the Uploads API (large files in parts): the handlers. What they
//! store is [`crate::files`].

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;

use crate::api::{
    self, ApiError, ApiResult, check_int, json, only_keys, opt_int, parse_object, query_get,
    query_limit, req_str,
};
use crate::app::{App, ts};
use crate::files::{
    FileObject, MAX_FILE_BYTES, MAX_PART_BYTES, StoredFile, Upload, UploadStatus, new_file_id,
};

/// Largest Upload.
const MAX_UPLOAD_BYTES: i64 = 8 * 1024 * 1024 * 1024;
/// Uploads expire an hour after they are created.
const UPLOAD_TTL_SECS: i64 = 3600;

const FILE_PURPOSES: &[&str] = &[
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];
const UPLOAD_PURPOSES: &[&str] = &["assistants", "batch", "fine-tune", "vision"];

fn multipart_error(e: &MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The request is too large: a file can be at most 512 MB and an upload part at most 64 MB.",
        )
    } else {
        ApiError::invalid(format!("Invalid multipart body: {}", e.body_text()))
    }
}

fn multipart_rejection(e: &MultipartRejection) -> ApiError {
    ApiError::invalid(format!(
        "Invalid multipart body: {}. Send multipart/form-data.",
        e.body_text()
    ))
}

fn check_jsonl(filename: &str) -> ApiResult<()> {
    if filename.to_ascii_lowercase().ends_with(".jsonl") {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "Invalid file format for Fine-Tuning API. Must be .jsonl",
        ))
    }
}

/// `expires_after.seconds`: an hour to 30 days after the anchor, `created_at`.
fn expiry_seconds(seconds: i64) -> ApiResult<i64> {
    check_int("expires_after.seconds", seconds, 3600, 2_592_000)
}

/// The JSON `expires_after` of `POST /uploads`: seconds after `created_at`, or None.
fn parse_expires_after(v: Option<&Value>) -> ApiResult<Option<i64>> {
    let map = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(ApiError::wrong_type("expires_after", "an object", other)),
    };
    match map.get("anchor") {
        Some(Value::String(a)) if a == "created_at" => {}
        None => return Err(ApiError::missing("expires_after.anchor")),
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid 'expires_after.anchor': expected 'created_at'.",
            )
            .param("expires_after.anchor"));
        }
    }
    match map.get("seconds") {
        Some(Value::Number(n)) if n.is_i64() => Ok(Some(expiry_seconds(n.as_i64().unwrap_or(0))?)),
        None => Err(ApiError::missing("expires_after.seconds")),
        Some(other) => Err(ApiError::wrong_type(
            "expires_after.seconds",
            "an integer",
            other,
        )),
    }
}

fn check_purpose(purpose: &str, allowed: &[&str]) -> ApiResult<()> {
    if allowed.contains(&purpose) {
        return Ok(());
    }
    let list = allowed
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(
        ApiError::invalid(format!("'{purpose}' is not one of [{list}] - 'purpose'"))
            .param("purpose"),
    )
}

/// `POST /files`: multipart `file` and `purpose`, optional `expires_after[anchor|seconds]`.
pub(crate) async fn create_file(
    State(app): State<App>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult {
    let mut multipart = multipart.map_err(|e| multipart_rejection(&e))?;
    let mut file: Option<(String, Bytes)> = None;
    let mut purpose: Option<String> = None;
    let mut expires_seconds: Option<String> = None;
    let mut expires_anchor: Option<String> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(&e))?
    {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "file" => {
                let filename = field.file_name().unwrap_or("file").to_owned();
                let data = field.bytes().await.map_err(|e| multipart_error(&e))?;
                file = Some((filename, data));
            }
            "purpose" | "expires_after[anchor]" | "expires_after[seconds]" => {
                let text = field.text().await.map_err(|e| multipart_error(&e))?;
                match name.as_str() {
                    "purpose" => purpose = Some(text),
                    "expires_after[anchor]" => expires_anchor = Some(text),
                    _ => expires_seconds = Some(text),
                }
            }
            other => return Err(ApiError::unknown_argument(other)),
        }
    }
    let (filename, data) = file.ok_or_else(|| ApiError::missing("file"))?;
    let purpose = purpose.ok_or_else(|| ApiError::missing("purpose"))?;
    check_purpose(&purpose, FILE_PURPOSES)?;
    if purpose == "fine-tune" {
        check_jsonl(&filename)?;
    }
    if data.len() as u64 > MAX_FILE_BYTES {
        return Err(ApiError::invalid(
            "File is too large: a file can be at most 512 MB. Use the Uploads API for larger files.",
        )
        .param("file"));
    }
    let now = app.clock.now();
    let created_at = ts(now);
    let expires_at = match (expires_anchor.as_deref(), expires_seconds) {
        (None, None) => None,
        (anchor, seconds) => {
            if anchor.unwrap_or("created_at") != "created_at" {
                return Err(ApiError::invalid(
                    "Invalid 'expires_after.anchor': expected 'created_at'.",
                )
                .param("expires_after.anchor"));
            }
            let seconds = seconds.ok_or_else(|| ApiError::missing("expires_after[seconds]"))?;
            let Ok(secs) = seconds.trim().parse::<i64>() else {
                return Err(ApiError::wrong_type(
                    "expires_after.seconds",
                    "an integer",
                    &Value::String(seconds),
                ));
            };
            Some(created_at + expiry_seconds(secs)?)
        }
    };
    let stored = StoredFile {
        id: new_file_id(),
        filename,
        purpose,
        data,
        created_at,
        expires_at,
    };
    app.write_file(&stored.id, &stored.data)?;
    tracing::debug!(file_id = %stored.id, bytes = stored.data.len(), "file created");
    let response = json(&stored.object());
    let mut store = app.store_at(now);
    store.files.insert(stored);
    app.save(&store);
    Ok(response)
}

/// `ListFilesResponse`.
#[derive(Serialize)]
struct FileList<'a> {
    object: &'static str,
    data: Vec<FileObject<'a>>,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
    has_more: bool,
}

/// `GET /files`: `purpose`, `limit` (1..10000, default 10000), `order` (default desc), `after`.
pub(crate) async fn list_files(
    State(app): State<App>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let limit = query_limit(&query, 10_000, 10_000)?;
    let order = query_get(&query, "order").unwrap_or("desc");
    if order != "asc" && order != "desc" {
        return Err(ApiError::invalid(format!(
            "Invalid value for 'order': expected one of 'asc' or 'desc', but got '{order}' instead."
        ))
        .param("order")
        .code("invalid_value"));
    }
    let purpose = query_get(&query, "purpose");
    let now = app.clock.now();
    let store = app.store_at(now);
    let mut items: Vec<&StoredFile> = store
        .files
        .live(now)
        .filter(|f| purpose.is_none_or(|p| f.purpose == p))
        .collect();
    // Stored in creation order; a stable sort keeps ties in that order.
    items.sort_by_key(|f| f.created_at);
    if order == "desc" {
        items.reverse();
    }
    let (data, has_more) = api::page(items, query_get(&query, "after"), limit, |f| &f.id);
    let list = FileList {
        object: "list",
        first_id: data.first().map(|f| f.id.as_str()),
        last_id: data.last().map(|f| f.id.as_str()),
        data: data.iter().map(|f| f.object()).collect(),
        has_more,
    };
    Ok(json(&list))
}

/// `GET /files/{id}`.
pub(crate) async fn get_file(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let now = app.clock.now();
    let store = app.store_at(now);
    let file = store
        .files
        .get(&id, now)
        .ok_or_else(|| ApiError::no_such("File", &id))?;
    Ok(json(&file.object()))
}

/// `GET /files/{id}/content`.
pub(crate) async fn file_content(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let now = app.clock.now();
    let store = app.store_at(now);
    let file = store
        .files
        .get(&id, now)
        .ok_or_else(|| ApiError::no_such("File", &id))?;
    if file.purpose == "assistants" {
        return Err(ApiError::invalid(
            "Not allowed to download files of purpose: assistants",
        ));
    }
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        file.data.clone(),
    )
        .into_response())
}

/// `DELETE /files/{id}`.
pub(crate) async fn delete_file(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    #[derive(Serialize)]
    struct Deleted<'a> {
        object: &'static str,
        deleted: bool,
        id: &'a str,
    }
    let now = app.clock.now();
    {
        let mut store = app.store_at(now);
        if !store.files.remove(&id, now) {
            return Err(ApiError::no_such("File", &id));
        }
        app.save(&store);
    }
    app.remove_file(&id);
    tracing::debug!(file_id = %id, "file deleted");
    Ok(json(&Deleted {
        object: "file",
        deleted: true,
        id: &id,
    }))
}

fn no_such_upload(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("No such Upload object: {id}"),
    )
    .param("upload_id")
}

/// `POST /uploads`: JSON `{filename, purpose, bytes, mime_type}`.
pub(crate) async fn create_upload(State(app): State<App>, body: Bytes) -> ApiResult {
    let map = parse_object(&body)?;
    only_keys(
        &map,
        &["filename", "purpose", "bytes", "mime_type", "expires_after"],
    )?;
    let filename = req_str(&map, "filename")?;
    let purpose = req_str(&map, "purpose")?;
    let bytes = opt_int(&map, "bytes", "bytes", 0, MAX_UPLOAD_BYTES)?
        .ok_or_else(|| ApiError::missing("bytes"))?;
    let _mime_type = req_str(&map, "mime_type")?;
    let file_expires_after = parse_expires_after(map.get("expires_after"))?;
    check_purpose(&purpose, UPLOAD_PURPOSES)?;
    if purpose == "fine-tune" {
        check_jsonl(&filename)?;
    }
    let now = app.clock.now();
    let created_at = ts(now);
    let upload = Upload {
        id: format!("upload_{}", api::random_hex()),
        filename,
        purpose,
        bytes,
        created_at,
        expires_at: created_at + UPLOAD_TTL_SECS,
        status: UploadStatus::Pending,
        parts: HashMap::new(),
        file_id: None,
        file_expires_after,
    };
    let mut store = app.store_at(now);
    let response = upload.render(now, &store.files);
    store.uploads.insert(upload.id.clone(), upload);
    Ok(response)
}

/// `POST /uploads/{id}/parts`: multipart `data`, at most 64 MB.
pub(crate) async fn add_part(
    State(app): State<App>,
    Path(id): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult {
    {
        let now = app.clock.now();
        let store = app.store_at(now);
        let upload = store.uploads.get(&id).ok_or_else(|| no_such_upload(&id))?;
        upload.require_pending(now, "add a part to")?;
    }
    let mut multipart = multipart.map_err(|e| multipart_rejection(&e))?;
    let mut data: Option<Bytes> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(&e))?
    {
        match field.name().unwrap_or("") {
            "data" => data = Some(field.bytes().await.map_err(|e| multipart_error(&e))?),
            other => return Err(ApiError::unknown_argument(other)),
        }
    }
    let data = data.ok_or_else(|| ApiError::missing("data"))?;
    if data.len() as u64 > MAX_PART_BYTES {
        return Err(
            ApiError::invalid("Each part of an Upload can be at most 64 MB.").param("data"),
        );
    }
    let now = app.clock.now();
    let mut store = app.store_at(now);
    let upload = store
        .uploads
        .get_mut(&id)
        .ok_or_else(|| no_such_upload(&id))?;
    upload.require_pending(now, "add a part to")?;
    let part_id = format!("part_{}", api::random_hex());
    upload.parts.insert(part_id.clone(), data);

    #[derive(Serialize)]
    struct PartObject<'a> {
        id: &'a str,
        object: &'static str,
        created_at: i64,
        upload_id: &'a str,
    }
    Ok(json(&PartObject {
        id: &part_id,
        object: "upload.part",
        created_at: ts(now),
        upload_id: &id,
    }))
}

/// `POST /uploads/{id}/complete`: JSON `{part_ids, md5?}`; the parts in that order make
/// the file, whose size must equal the `bytes` declared at creation.
pub(crate) async fn complete_upload(
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let map = parse_object(&body)?;
    only_keys(&map, &["part_ids", "md5"])?;
    let part_ids: Vec<String> = match map.get("part_ids") {
        None | Some(Value::Null) => return Err(ApiError::missing("part_ids")),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::wrong_type(
                    &format!("part_ids[{i}]"),
                    "a string",
                    other,
                )),
            })
            .collect::<ApiResult<_>>()?,
        Some(other) => return Err(ApiError::wrong_type("part_ids", "an array", other)),
    };
    let md5 = api::opt_str(&map, "md5", "md5")?;

    let now = app.clock.now();
    let mut store = app.store_at(now);
    let upload = store.uploads.get(&id).ok_or_else(|| no_such_upload(&id))?;
    upload.require_pending(now, "complete")?;
    let mut seen = std::collections::HashSet::new();
    let mut parts: Vec<&Bytes> = Vec::with_capacity(part_ids.len());
    for pid in &part_ids {
        if !seen.insert(pid.as_str()) {
            return Err(
                ApiError::invalid(format!("Part {pid} is listed more than once."))
                    .param("part_ids"),
            );
        }
        let part = upload.parts.get(pid).ok_or_else(|| {
            ApiError::invalid(format!("Part {pid} does not belong to Upload {id}."))
                .param("part_ids")
        })?;
        parts.push(part);
    }
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total as i64 != upload.bytes {
        return Err(ApiError::invalid(format!(
            "The number of bytes uploaded ({total}) does not match the number of bytes declared when the Upload was created ({}).",
            upload.bytes
        ))
        .param("part_ids"));
    }
    if let Some(want) = md5.as_deref().filter(|m| !m.is_empty()) {
        let got = {
            use md5::Digest as _;
            let mut hasher = md5::Md5::new();
            for part in &parts {
                hasher.update(part.as_ref() as &[u8]);
            }
            hex::encode(hasher.finalize())
        };
        if !got.eq_ignore_ascii_case(want) {
            return Err(ApiError::invalid(format!(
                "The md5 checksum of the uploaded bytes ({got}) does not match the md5 provided ({want})."
            ))
            .param("md5"));
        }
    }
    let mut data = Vec::with_capacity(total);
    for p in &parts {
        data.extend_from_slice(p);
    }
    let file = StoredFile {
        id: new_file_id(),
        filename: upload.filename.clone(),
        purpose: upload.purpose.clone(),
        data: Bytes::from(data),
        created_at: upload.created_at,
        expires_at: upload.file_expires_after.map(|s| upload.created_at + s),
    };
    let file_id = file.id.clone();
    app.write_file(&file.id, &file.data)?;
    store.files.insert(file);
    let upload = store
        .uploads
        .get_mut(&id)
        .ok_or_else(|| no_such_upload(&id))?;
    upload.status = UploadStatus::Completed;
    upload.file_id = Some(file_id);
    upload.parts.clear();
    app.save(&store);
    tracing::debug!(upload_id = %id, bytes = total, "upload completed");
    let upload = &store.uploads[&id];
    Ok(upload.render(now, &store.files))
}

/// `POST /uploads/{id}/cancel`.
pub(crate) async fn cancel_upload(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let now = app.clock.now();
    let mut store = app.store_at(now);
    let upload = store
        .uploads
        .get_mut(&id)
        .ok_or_else(|| no_such_upload(&id))?;
    upload.require_pending(now, "cancel")?;
    upload.status = UploadStatus::Cancelled;
    upload.parts.clear();
    let upload = &store.uploads[&id];
    Ok(upload.render(now, &store.files))
}
