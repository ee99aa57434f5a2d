//! [`FineTuning`] for OpenAI: the core's job types to and from OpenAI's wire format.
//! Only here does the lifecycle meet OpenAI's statuses, event kinds, `"auto"`
//! hyperparameters, method objects and id prefixes.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::openai::OpenAi;
use crate::types::{self, AutoOr, AutoTag};
use finetune_core::domain::job::{EventKind, Hyperparameters, JobError, JobState, Method, Metrics};
use finetune_core::error::Error;
use finetune_core::ports::{
    FineTuning, NewJob, Page, PreparedUpload, RemoteCheckpoint, RemoteEvent, RemoteFile, RemoteJob,
    UpstreamError,
};

#[async_trait::async_trait]
impl FineTuning for OpenAi {
    fn is_job_id(&self, id: &str) -> bool {
        id.starts_with("ftjob-")
    }

    async fn upload_file(&self, path: &Path, filename: &str) -> Result<RemoteFile, UpstreamError> {
        OpenAi::upload_file(self, path, filename).await.map(file)
    }

    async fn list_files(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<RemoteFile>, UpstreamError> {
        OpenAi::list_files(self, after, limit)
            .await
            .map(|p| page(p, file))
    }

    async fn get_file(&self, id: &str) -> Result<RemoteFile, UpstreamError> {
        OpenAi::get_file(self, id).await.map(file)
    }

    async fn create_job(&self, job: &NewJob) -> Result<RemoteJob, UpstreamError> {
        OpenAi::create_job(self, &create_request(job))
            .await
            .map(remote_job)
    }

    async fn get_job(&self, id: &str) -> Result<RemoteJob, UpstreamError> {
        OpenAi::get_job(self, id).await.map(remote_job)
    }

    async fn list_jobs(
        &self,
        after: Option<&str>,
        limit: u32,
        metadata: &[(String, String)],
    ) -> Result<Page<RemoteJob>, UpstreamError> {
        OpenAi::list_jobs(self, after, limit, metadata)
            .await
            .map(|p| page(p, remote_job))
    }

    async fn cancel_job(&self, id: &str) -> Result<RemoteJob, UpstreamError> {
        OpenAi::cancel_job(self, id).await.map(remote_job)
    }

    async fn list_events(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<RemoteEvent>, UpstreamError> {
        OpenAi::list_events(self, id, after, limit)
            .await
            .map(|p| page(p, |e| event(&e)))
    }

    async fn list_checkpoints(
        &self,
        id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<RemoteCheckpoint>, UpstreamError> {
        OpenAi::list_checkpoints(self, id, after, limit)
            .await
            .map(|p| page(p, checkpoint))
    }

    async fn prepare_upload(
        &self,
        path: &Path,
        sha256: &str,
        scratch: &Path,
    ) -> Result<PreparedUpload, Error> {
        let (path, sha256, temporary) = strip_metadata(path, sha256, scratch).await?;
        Ok(PreparedUpload {
            path,
            sha256,
            temporary,
        })
    }
}

/// A copy of `path` without top-level `metadata` keys when any line has one (OpenAI's
/// training files take only the format's keys; File Engine tags examples with
/// `metadata.intent`). Returns (file to upload, its SHA-256, whether it is a temporary copy).
async fn strip_metadata(
    path: &Path,
    sha256: &str,
    dir: &Path,
) -> Result<(PathBuf, String, bool), Error> {
    let path = path.to_owned();
    let original_sha256 = sha256.to_owned();
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || -> Result<(PathBuf, String, bool), Error> {
        use std::io::{BufRead, BufWriter, Write};
        let io = |e: std::io::Error| Error::Io(format!("preparing the upload failed: {e}"));
        let reader = std::io::BufReader::new(std::fs::File::open(&path).map_err(io)?);
        let tmp = tempfile::Builder::new()
            .prefix(".strip-")
            .suffix(".jsonl")
            .tempfile_in(&dir)
            .map_err(io)?;
        let (file, tmp_path) = tmp.into_parts();
        let mut out = BufWriter::new(file);
        let mut hasher = Sha256::new();
        let mut changed = false;
        for line in reader.split(b'\n') {
            let line = line.map_err(io)?;
            let mut bytes = line;
            if let Ok(serde_json::Value::Object(mut obj)) =
                serde_json::from_slice::<serde_json::Value>(&bytes)
            {
                if obj.remove("metadata").is_some() {
                    bytes = serde_json::to_vec(&obj).map_err(|e| Error::Io(e.to_string()))?;
                    changed = true;
                }
            }
            bytes.push(b'\n');
            hasher.update(&bytes);
            out.write_all(&bytes).map_err(io)?;
        }
        out.flush().map_err(io)?;
        if !changed {
            return Ok((path, original_sha256, false));
        }
        let kept = tmp_path
            .keep()
            .map_err(|e| Error::Io(format!("preparing the upload failed: {e}")))?;
        Ok((kept, hex::encode(hasher.finalize()), true))
    })
    .await
    .map_err(|e| Error::Io(format!("preparing the upload failed: {e}")))?
}

fn page<T, U>(p: types::Page<T>, f: impl FnMut(T) -> U) -> Page<U> {
    Page {
        data: p.data.into_iter().map(f).collect(),
        has_more: p.has_more,
        last_id: p.last_id,
    }
}

fn file(f: types::FileObject) -> RemoteFile {
    RemoteFile {
        rejected: f.status.as_deref() == Some("error"),
        id: f.id,
        bytes: f.bytes,
        filename: f.filename,
        expires_at: f.expires_at,
    }
}

/// `CreateFineTuningJobRequest`: the method object with its hyperparameters, each
/// `"auto"` unless the caller set it.
pub(crate) fn create_request(job: &NewJob) -> types::CreateJobRequest {
    types::CreateJobRequest {
        model: job.model.clone(),
        training_file: job.training_file.clone(),
        validation_file: job.validation_file.clone(),
        suffix: job.suffix.clone(),
        seed: job.seed,
        method: Some(method(job.method, &job.hyperparameters)),
        metadata: job.metadata.clone(),
    }
}

fn method(method: Method, h: &Hyperparameters) -> types::Method {
    let auto_or = |v: Option<f64>| Some(v.map_or(AutoOr::Auto(AutoTag::Auto), AutoOr::Number));
    let hyperparameters = types::Hyperparameters {
        n_epochs: auto_or(h.n_epochs.map(f64::from)),
        batch_size: auto_or(h.batch_size.map(f64::from)),
        learning_rate_multiplier: auto_or(h.learning_rate_multiplier),
        beta: if method == Method::Dpo {
            auto_or(h.beta)
        } else {
            None
        },
    };
    let params = Some(types::MethodParams {
        hyperparameters: Some(hyperparameters),
    });
    match method {
        Method::Supervised => types::Method {
            kind: "supervised".to_owned(),
            supervised: params,
            dpo: None,
        },
        Method::Dpo => types::Method {
            kind: "dpo".to_owned(),
            supervised: None,
            dpo: params,
        },
    }
}

/// The state of an OpenAI status; statuses this service does not know are `Unknown`
/// (the raw status is kept beside it).
fn state(status: &str) -> JobState {
    match status {
        "validating_files" => JobState::ValidatingFiles,
        "queued" => JobState::Queued,
        "running" => JobState::Running,
        "succeeded" => JobState::Succeeded,
        "failed" => JobState::Failed,
        "cancelled" => JobState::Cancelled,
        "paused" => JobState::Paused,
        _ => JobState::Unknown,
    }
}

fn remote_job(j: types::Job) -> RemoteJob {
    let hyperparameters = j
        .effective_hyperparameters()
        .map(|h| {
            let num = |v: Option<AutoOr>| v.and_then(AutoOr::value);
            Hyperparameters {
                n_epochs: num(h.n_epochs).map(|n| n as u32),
                batch_size: num(h.batch_size).map(|n| n as u32),
                learning_rate_multiplier: num(h.learning_rate_multiplier),
                beta: num(h.beta),
            }
        })
        .unwrap_or_default();
    let error = j.failure().map(|e| JobError {
        code: e.code.clone().unwrap_or_default(),
        message: e.message.clone().unwrap_or_default(),
        param: e.param.clone().unwrap_or_default(),
    });
    RemoteJob {
        state: state(&j.status),
        method: match j.method.as_ref().map(|m| m.kind.as_str()) {
            Some("dpo") => Method::Dpo,
            _ => Method::Supervised,
        },
        hyperparameters,
        error,
        id: j.id,
        model: j.model,
        status: j.status,
        created_at: j.created_at,
        finished_at: j.finished_at,
        estimated_finish: j.estimated_finish,
        fine_tuned_model: j.fine_tuned_model,
        trained_tokens: j.trained_tokens,
        training_file: j.training_file,
        validation_file: j.validation_file,
        seed: j.seed,
        suffix: j.user_provided_suffix,
        metadata: j.metadata.unwrap_or_default(),
    }
}

fn metrics(m: &types::StepMetrics) -> Metrics {
    Metrics {
        step: m.step.unwrap_or_default(),
        total_steps: m.total_steps.unwrap_or_default(),
        train_loss: m.train_loss,
        train_mean_token_accuracy: m.train_mean_token_accuracy,
        valid_loss: m.valid_loss,
        valid_mean_token_accuracy: m.valid_mean_token_accuracy,
        full_valid_loss: m.full_valid_loss,
        full_valid_mean_token_accuracy: m.full_valid_mean_token_accuracy,
    }
}

fn event(e: &types::JobEvent) -> RemoteEvent {
    let metrics = e.metrics().map(|m| metrics(&m));
    let kind = match (e.kind.as_deref(), &metrics) {
        (Some("metrics"), Some(_)) => EventKind::Metrics,
        (Some("message") | None, _) => EventKind::Message,
        _ => EventKind::Unknown,
    };
    RemoteEvent {
        id: e.id.clone(),
        created_at: e.created_at,
        level: e.level.clone(),
        message: e.message.clone(),
        kind,
        metrics,
        announces_checkpoint: e.announced_checkpoint_step(),
    }
}

fn checkpoint(c: types::Checkpoint) -> RemoteCheckpoint {
    RemoteCheckpoint {
        metrics: metrics(&c.metrics),
        id: c.id,
        created_at: c.created_at,
        model: c.fine_tuned_model_checkpoint,
        step: c.step_number,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_new_job_is_sent_as_the_method_object_with_auto_for_what_is_unset() {
        let job = NewJob {
            model: "gpt-4o-mini-2024-07-18".to_owned(),
            training_file: "file-t".to_owned(),
            validation_file: None,
            suffix: None,
            seed: None,
            method: Method::Dpo,
            hyperparameters: Hyperparameters {
                n_epochs: Some(3),
                beta: Some(0.2),
                ..Hyperparameters::default()
            },
            metadata: BTreeMap::new(),
        };
        let body = serde_json::to_value(create_request(&job)).unwrap();
        assert_eq!(
            body["method"],
            serde_json::json!({"type": "dpo", "dpo": {"hyperparameters": {
                "n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": "auto", "beta": 0.2
            }}})
        );
        let supervised = NewJob {
            method: Method::Supervised,
            ..job
        };
        let body = serde_json::to_value(create_request(&supervised)).unwrap();
        assert_eq!(body["method"]["type"], "supervised");
        assert!(
            body["method"]["supervised"]["hyperparameters"]
                .get("beta")
                .is_none()
        );
    }

    #[test]
    fn a_job_is_read_in_the_cores_terms_keeping_openais_status_word() {
        let wire: types::Job = serde_json::from_value(serde_json::json!({
            "id": "ftjob-1", "status": "paused", "model": "gpt-4o-mini-2024-07-18",
            "training_file": "file-t", "error": {},
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto"}}},
            "metadata": {"finetune_request_id": "r1"}
        }))
        .unwrap();
        let job = remote_job(wire);
        assert_eq!(
            (job.state, job.status.as_str()),
            (JobState::Paused, "paused")
        );
        assert_eq!(job.method, Method::Dpo);
        assert_eq!(job.hyperparameters.n_epochs, Some(2));
        assert_eq!(job.hyperparameters.batch_size, None);
        assert_eq!(job.error, None, "an empty error object is no error");
        assert_eq!(job.metadata["finetune_request_id"], "r1");
        let later: types::Job =
            serde_json::from_value(serde_json::json!({"id": "ftjob-2", "status": "archived"}))
                .unwrap();
        assert_eq!(remote_job(later).state, JobState::Unknown);
    }

    #[test]
    fn events_say_their_kind_and_the_checkpoint_they_announce() {
        let wire = |v| serde_json::from_value::<types::JobEvent>(v).unwrap();
        let step = event(&wire(serde_json::json!({
            "id": "e1", "type": "metrics", "message": "Step 3/10",
            "data": {"step": 3, "total_steps": 10, "train_loss": 1.5}
        })));
        assert_eq!(step.kind, EventKind::Metrics);
        assert_eq!(step.metrics.as_ref().map(|m| m.step), Some(3));
        let announce = event(&wire(serde_json::json!({
            "id": "e2", "type": "message", "message": "Checkpoint created at step 5 with Snapshot ID: x"
        })));
        assert_eq!(
            (announce.kind, announce.announces_checkpoint),
            (EventKind::Message, Some(5))
        );
        let other = event(&wire(
            serde_json::json!({"id": "e3", "type": "something_new"}),
        ));
        assert_eq!(other.kind, EventKind::Unknown);
    }
}
