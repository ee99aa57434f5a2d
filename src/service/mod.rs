//! gRPC handlers: validate the request, convert, call the core, convert back.

mod convert;
mod jobs;
mod serving;
pub mod status;

use status::{IntoStatus, status};

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use crate::pb;
use crate::pb::fine_tune_service_server::FineTuneService;
use finetune_core::dataset::{self, Catalog, Input};
use finetune_core::domain::job::Job;
use finetune_core::error::{Error, Precondition};
use finetune_core::jobs::{DatasetFile, JobManager, JobReader, Lookup, StartRequest};
use finetune_core::store::{DatasetStore, Expected};

/// Everything the handlers share.
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub datasets: DatasetStore,
    pub max_dataset_bytes: u64,
    /// The job history in the store: what GetJob, ListJobs and WatchJob read. It needs
    /// no provider. With one, it is the manager's reader (`JobManager::reader`), so its
    /// watchers wake on the manager's writes.
    pub history: JobReader,
    /// The writes of the training lifecycle (start, cancel, adopt); None when no
    /// provider is configured.
    pub jobs: Option<Arc<JobManager>>,
    /// Tiers, promotion and completions.
    pub serving: Arc<finetune_core::serving::Serving>,
    /// This server's metrics registry.
    pub metrics: crate::metrics::Metrics,
    /// The job store, for what no handler reads directly (readiness).
    pub store: Arc<dyn finetune_core::store::Store>,
}

impl AppState {
    /// The job manager, for `what` (a write); without a provider, FAILED_PRECONDITION
    /// saying how to configure one.
    fn jobs(&self, what: &str) -> Result<&Arc<JobManager>, Status> {
        self.jobs.as_ref().ok_or_else(|| {
            Error::FailedPrecondition {
                message: format!("{what} needs a provider, and none is configured: set OPENAI_API_KEY (and OPENAI_BASE_URL if needed), or run `finetune serve --emulator` for offline development"),
                reason: Precondition::ProviderNotConfigured,
                violations: Vec::new(),
            }
            .into_status()
        })
    }
}

/// The `FineTuneService` implementation.
#[derive(Clone)]
pub struct Service {
    state: Arc<AppState>,
}

impl Service {
    pub fn new(state: Arc<AppState>) -> Service {
        Service { state }
    }

    /// The job `id` names, read from the store. An id the store does not hold may name a
    /// job made outside the service: that one is adopted (the proto promises it for GetJob
    /// and WatchJob; PromoteModel by job id does the same), which takes a provider. A job
    /// the store holds is never written or looked up upstream here.
    async fn job(&self, id: &str) -> Result<Job, Status> {
        match self.state.history.lookup(id).await.map_err(status)? {
            Lookup::Stored(job) => Ok(*job),
            Lookup::Outside => {
                let what = format!(
                    "job {id} is not stored here; adopting it as a job made outside the service"
                );
                self.state.jobs(&what)?.adopt(id).await.map_err(status)
            }
        }
    }

    /// Stores or finds a dataset source as a file, for training.
    async fn dataset_file(
        &self,
        source: Option<pb::DatasetSource>,
        field: &str,
    ) -> Result<DatasetFile, Error> {
        let source = source.unwrap_or_default();
        let name = source.file_name.clone();
        match source.source {
            Some(pb::dataset_source::Source::Content(bytes)) => {
                let stored = self
                    .state
                    .datasets
                    .put(&bytes, self.state.max_dataset_bytes)
                    .await?;
                let path = self.state.datasets.path(&stored.id).await?;
                Ok(DatasetFile {
                    path,
                    name: if name.is_empty() {
                        format!("<{field}>")
                    } else {
                        name
                    },
                    sha256: stored.id,
                })
            }
            Some(pb::dataset_source::Source::DatasetId(id)) => {
                let path = self.state.datasets.path(&id).await.map_err(|e| match e {
                    Error::InvalidArgument { reason, .. } => {
                        Error::invalid(format!("{field}.dataset_id"), reason)
                    }
                    other => other,
                })?;
                Ok(DatasetFile {
                    path,
                    name: if name.is_empty() { id.clone() } else { name },
                    sha256: id,
                })
            }
            None => Err(Error::invalid(field, "set either content or dataset_id")),
        }
    }

    /// Opens a dataset source for reading on a blocking thread.
    async fn input(&self, source: pb::DatasetSource, field: &str) -> Result<Input<'static>, Error> {
        let label = |default: String| {
            if source.file_name.is_empty() {
                default
            } else {
                source.file_name.clone()
            }
        };
        match source.source {
            Some(pb::dataset_source::Source::Content(bytes)) => Ok(Input {
                name: label(format!("<{field}>")),
                reader: Box::new(std::io::Cursor::new(bytes)),
            }),
            Some(pb::dataset_source::Source::DatasetId(id)) => {
                let path = self.state.datasets.path(&id).await.map_err(|e| match e {
                    Error::InvalidArgument { reason, .. } => {
                        Error::invalid(format!("{field}.dataset_id"), reason)
                    }
                    other => other,
                })?;
                let file = std::fs::File::open(&path)
                    .map_err(|e| Error::Io(format!("cannot open stored dataset {id}: {e}")))?;
                Ok(Input {
                    name: label(id),
                    reader: Box::new(file),
                })
            }
            None => Err(Error::invalid(field, "set either content or dataset_id")),
        }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl FineTuneService for Service {
    async fn validate_dataset(
        &self,
        request: Request<pb::ValidateDatasetRequest>,
    ) -> Result<Response<pb::ValidateDatasetResponse>, Status> {
        let mut req = request.into_inner();
        let options = convert::options(&req).map_err(status)?;
        let training = self
            .input(req.training.take().unwrap_or_default(), "training")
            .await
            .map_err(status)?;
        let validation = match req.validation.take() {
            Some(v) => Some(self.input(v, "validation").await.map_err(status)?),
            None => None,
        };
        let state = self.state.clone();
        let report = tokio::task::spawn_blocking(move || {
            dataset::validate(training, validation, &options, &state.catalog)
        })
        .await
        .map_err(|e| Status::internal(format!("validation task failed: {e}")))?
        .map_err(status)?;
        info!(
            examples = report.training.examples,
            errors = report.error_count,
            warnings = report.warning_count,
            tokens = report.training.tokens.total,
            "validated dataset"
        );
        Ok(Response::new(pb::ValidateDatasetResponse {
            report: Some(convert::report(&report)),
        }))
    }

    async fn upload_dataset(
        &self,
        request: Request<Streaming<pb::UploadDatasetRequest>>,
    ) -> Result<Response<pb::UploadDatasetResponse>, Status> {
        let mut stream = request.into_inner();
        let mut upload = self
            .state
            .datasets
            .begin(self.state.max_dataset_bytes)
            .await
            .map_err(status)?;
        let mut expected = Expected::default();
        let mut first = true;
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            if let Some(header) = msg.header {
                if !first {
                    return Err(Error::invalid(
                        "header",
                        "only the first message may carry a header",
                    )
                    .into_status());
                }
                if !header.sha256.is_empty() {
                    expected.sha256 = Some(header.sha256);
                }
                if header.size_bytes > 0 {
                    if header.size_bytes > self.state.max_dataset_bytes {
                        return Err(Error::ResourceExhausted(format!(
                            "announced size {} exceeds the upload limit of {} bytes (--max-dataset-bytes)",
                            header.size_bytes, self.state.max_dataset_bytes
                        ))
                        .into_status());
                    }
                    expected.size_bytes = Some(header.size_bytes);
                }
            }
            first = false;
            upload.write(&msg.chunk).await.map_err(status)?;
        }
        let stored = upload.finish(&expected).await.map_err(status)?;
        info!(dataset_id = %stored.id, size_bytes = stored.size_bytes, already_present = stored.already_present, "stored dataset");
        Ok(Response::new(pb::UploadDatasetResponse {
            dataset_id: stored.id,
            size_bytes: stored.size_bytes,
            already_present: stored.already_present,
        }))
    }

    async fn start_training(
        &self,
        request: Request<pb::StartTrainingRequest>,
    ) -> Result<Response<pb::StartTrainingResponse>, Status> {
        let manager = self.state.jobs("training")?.clone();
        let req = request.into_inner();
        let accepted = convert::accepted_problems(&req.accepted_problems, req.validation.is_some())
            .map_err(status)?;
        let start = StartRequest {
            request_id: req.request_id,
            training: self
                .dataset_file(req.training, "training")
                .await
                .map_err(status)?,
            validation: match req.validation {
                Some(v) => Some(
                    self.dataset_file(Some(v), "validation")
                        .await
                        .map_err(status)?,
                ),
                None => None,
            },
            model: if req.model.is_empty() {
                self.state.catalog.default_model.clone()
            } else {
                req.model
            },
            method: jobs::method_from(req.method).map_err(status)?,
            hyperparameters: jobs::hyperparameters_from(req.hyperparameters),
            suffix: Some(req.suffix).filter(|s| !s.is_empty()),
            seed: req.seed,
            metadata: jobs::metadata_from(req.metadata),
            accepted,
        };
        let started = manager.start(start).await.map_err(status)?;
        Ok(Response::new(pb::StartTrainingResponse {
            job: Some(jobs::job(&started.job)),
            report: started.report.as_ref().map(convert::report),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let job = self.job(&request.into_inner().job_id).await?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(jobs::job(&job)),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let req = request.into_inner();
        let state = jobs::state_filter(req.state).map_err(status)?;
        let token = Some(req.page_token.as_str()).filter(|t| !t.is_empty());
        let page = self
            .state
            .history
            .list(state, token, req.page_size)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: page.jobs.iter().map(jobs::job).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let job = self
            .state
            .jobs("cancelling a job")?
            .cancel(&request.into_inner().job_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(jobs::job(&job)),
        }))
    }

    type WatchJobStream = ResponseStream<pb::WatchJobResponse>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let req = request.into_inner();
        let job = self.job(&req.job_id).await?;
        let rx = self.state.history.watch(job, req.after_sequence);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|item| item.map(jobs::watch_item).map_err(status));
        let stream = self.state.metrics.watch_stream(stream);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn complete(
        &self,
        request: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let deadline = serving::deadline(request.metadata());
        let req = serving::request(request.into_inner(), deadline).map_err(status)?;
        let completion = self.state.serving.complete(req).await.map_err(status)?;
        Ok(Response::new(pb::CompleteResponse {
            completion: Some(serving::completion(completion)),
        }))
    }

    type StreamCompleteStream = ResponseStream<pb::StreamCompleteResponse>;

    async fn stream_complete(
        &self,
        request: Request<pb::StreamCompleteRequest>,
    ) -> Result<Response<Self::StreamCompleteStream>, Status> {
        let deadline = serving::deadline(request.metadata());
        let inner = request
            .into_inner()
            .request
            .ok_or_else(|| status(Error::invalid("request", "required")))?;
        let rx = self
            .state
            .serving
            .stream(serving::request(inner, deadline).map_err(status)?)
            .await
            .map_err(status)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| {
            use pb::stream_complete_response::Item;
            item.map(|i| pb::StreamCompleteResponse {
                item: Some(match i {
                    finetune_core::serving::StreamItem::Delta(text) => Item::Delta(text),
                    finetune_core::serving::StreamItem::Done(c) => {
                        Item::Completion(serving::completion(*c))
                    }
                }),
            })
            .map_err(status)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_tiers(
        &self,
        _request: Request<pb::ListTiersRequest>,
    ) -> Result<Response<pb::ListTiersResponse>, Status> {
        let tiers = self
            .state
            .serving
            .tiers()
            .await
            .into_iter()
            .map(serving::tier)
            .collect();
        Ok(Response::new(pb::ListTiersResponse { tiers }))
    }

    async fn promote_model(
        &self,
        request: Request<pb::PromoteModelRequest>,
    ) -> Result<Response<pb::PromoteModelResponse>, Status> {
        let req = request.into_inner();
        let (model, job_id) = match req.source {
            Some(pb::promote_model_request::Source::JobId(id)) => {
                let job = self.job(&id).await?;
                match (&job.state, &job.fine_tuned_model) {
                    (finetune_core::domain::job::JobState::Succeeded, Some(model)) => {
                        (model.clone(), Some(job.id.clone()))
                    }
                    _ => {
                        return Err(Error::FailedPrecondition {
                            message: format!("job {} has not succeeded (it is {}); only a finished model can be promoted", job.id, job.state.as_str()),
                            reason: Precondition::JobNotSucceeded,
                            violations: Vec::new(),
                        }
                        .into_status());
                    }
                }
            }
            Some(pb::promote_model_request::Source::Model(model)) => (model, None),
            None => return Err(Error::invalid("source", "give job_id or model").into_status()),
        };
        let previous = self
            .state
            .serving
            .promote(&req.tier, &model, job_id.as_deref())
            .await
            .map_err(status)?;
        let tier = self
            .state
            .serving
            .tiers()
            .await
            .into_iter()
            .find(|t| t.spec.name == req.tier)
            .map(serving::tier);
        Ok(Response::new(pb::PromoteModelResponse {
            tier,
            previous_model: previous,
        }))
    }

    async fn record_feedback(
        &self,
        request: Request<pb::RecordFeedbackRequest>,
    ) -> Result<Response<pb::RecordFeedbackResponse>, Status> {
        let req = request.into_inner();
        let up = match pb::Rating::try_from(req.rating) {
            Ok(pb::Rating::Up) => true,
            Ok(pb::Rating::Down) => false,
            _ => return Err(Error::invalid("rating", "RATING_UP or RATING_DOWN").into_status()),
        };
        let (tier, split) = self
            .state
            .serving
            .feedback(&req.response_id, up)
            .await
            .map_err(status)?;
        let arm = if split.is_empty() {
            String::new()
        } else {
            tier.clone()
        };
        Ok(Response::new(pb::RecordFeedbackResponse { tier, arm }))
    }

    async fn get_tier_stats(
        &self,
        request: Request<pb::GetTierStatsRequest>,
    ) -> Result<Response<pb::GetTierStatsResponse>, Status> {
        let req = request.into_inner();
        let tier = Some(req.tier.as_str()).filter(|t| !t.is_empty());
        let stats = self
            .state
            .serving
            .stats(tier)
            .await
            .map_err(status)?
            .into_iter()
            .map(serving::stats)
            .collect();
        Ok(Response::new(pb::GetTierStatsResponse { stats }))
    }
}
