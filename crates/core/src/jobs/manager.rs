//! Starting, finding, listing and cancelling jobs.
//!
//! StartTraining is safe to repeat: the request id is reserved in the store before
//! anything is sent upstream, and OpenAI is asked for a job carrying the request id in
//! its metadata before a new one is created, so a retry after a lost response adopts
//! the job OpenAI made instead of paying for a second one.
//!
//! The upstream work of a creation runs in its own task, so a caller whose deadline
//! passes or who disconnects does not cut it short; calls with the same request id wait
//! for that task. A create whose answer was lost is settled by the same look-up before
//! anything is released: the reservation goes only when OpenAI is known to hold no job
//! for it. What cannot be settled yet stays reserved, for a retry with the same request
//! id or the periodic reconciler.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::poller::{Poller, SuccessHook, WRITE_ATTEMPTS, apply_remote, with_state_changes};
use super::reader::{JobReader, Lookup, not_found};
use super::watch::Hub;
use crate::dataset::{self, Catalog, Format, Input, Options, Report};
use crate::domain::job::{
    EventKind, Hyperparameters, Job, Method, NewEvent, now_millis, state_event,
};
use crate::error::{Error, Missing, Precondition};
use crate::ports::retry::Failure;
use crate::ports::{
    FineTuning, NewJob, PreparedUpload, RemoteFile, RemoteJob, RetryPolicy, UpstreamError,
};
use crate::store::{DatasetStore, Recorded, Reservation, Store};

/// Metadata keys this service writes on OpenAI jobs.
const META_REQUEST_ID: &str = "finetune_request_id";
/// The metadata key holding this service's job id on the upstream job.
const META_JOB_ID: &str = "finetune_job_id";
/// The most metadata pairs OpenAI takes on a fine-tuning job (its `Metadata` schema).
const OPENAI_MAX_METADATA: usize = 16;
/// What a caller may set: OpenAI's limit less the keys this service writes on every job.
const MAX_USER_METADATA: usize = OPENAI_MAX_METADATA - [META_REQUEST_ID, META_JOB_ID].len();
/// How long a caller is asked to wait before repeating a StartTraining whose outcome
/// could not be confirmed (RetryInfo).
const OUTCOME_RETRY_AFTER: Duration = Duration::from_secs(2);

/// An upload that expires sooner than this is not reused: a job can wait in OpenAI's
/// queue for hours before its file is read, and a file gone by then fails the job.
const REUSE_MARGIN_SECS: i64 = 24 * 3600;

/// Timing of the lifecycle.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// How often a job's poller asks OpenAI for news.
    pub poll_interval: Duration,
    /// How long a watch stream may be silent before a heartbeat.
    pub heartbeat: Duration,
    /// Retries of job creation and uploads, each attempt preceded by a look for what a
    /// lost earlier attempt may have made.
    pub retry: RetryPolicy,
    /// How often reservations left creating (an outcome that could not be confirmed) are
    /// settled against OpenAI. Each round is one store query, plus one OpenAI look-up
    /// per such reservation older than the interval.
    pub reconcile_interval: Duration,
    /// How long a polling lease outlives its last renewal: when the process holding it
    /// dies, another takes the job over within this plus one `poll_interval`. Longer than
    /// a poll interval, or leases lapse between polls.
    pub lease_ttl: Duration,
}

impl Default for JobsConfig {
    fn default() -> JobsConfig {
        JobsConfig {
            poll_interval: Duration::from_secs(30),
            heartbeat: Duration::from_secs(15),
            retry: RetryPolicy::default(),
            reconcile_interval: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(60),
        }
    }
}

/// How a creation (or a settle of a reservation left creating) ended; shared by every
/// call waiting for it.
#[derive(Debug, Clone)]
enum Creation {
    /// The job exists upstream and is tracked, with its poller running.
    Tracked(Box<Job>),
    /// OpenAI holds no job for the request id and the reservation is gone: `Some` says
    /// why the creation failed; `None` when a settle released it (a caller may start
    /// afresh).
    Released(Option<Error>),
    /// OpenAI may hold a job: the reservation stays, to be settled by a call with the
    /// same request id or by the reconciler. The error is what the caller gets.
    Unsettled(Error),
}

/// A creation in progress, awaitable by any number of calls.
type CreationTask = Shared<BoxFuture<'static, Creation>>;

/// What a creation task does.
enum Work {
    /// Creates the job upstream for the request, adopting one OpenAI already holds for
    /// its request id. `fresh` when this call just made the reservation: no earlier
    /// attempt can have created anything for it.
    Create { req: Arc<StartRequest>, fresh: bool },
    /// Only settles the reservation: adopts the job OpenAI holds, or releases it.
    Settle,
}

/// A failed creation: the error, and whether a job may still exist upstream.
struct CreateFailure {
    error: Error,
    maybe_created: bool,
}

/// A dataset file in the content-addressed store.
#[derive(Debug, Clone)]
pub struct DatasetFile {
    /// Where the file is in the dataset store.
    pub path: PathBuf,
    /// Its hex SHA-256 (the dataset id).
    pub sha256: String,
    /// The filename given to the provider on upload.
    pub name: String,
}

/// StartTraining, in the core's terms.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// The caller's idempotency key: a repeat with the same parameters returns the same job.
    pub request_id: String,
    /// The training dataset.
    pub training: DatasetFile,
    /// The validation dataset, if any.
    pub validation: Option<DatasetFile>,
    /// The base model to fine-tune.
    pub model: String,
    /// Supervised or DPO.
    pub method: Method,
    /// The requested hyperparameters; each `None` is left to the provider.
    pub hyperparameters: Hyperparameters,
    /// Text the provider adds to the fine-tuned model's name.
    pub suffix: Option<String>,
    /// Seed for a reproducible run.
    pub seed: Option<i64>,
    /// The caller's key/value tags, stored here and on the upstream job.
    pub metadata: BTreeMap<String, String>,
    /// Problems the caller accepts (sorted, no repeats): they do not block the job.
    pub accepted: Vec<dataset::Acceptance>,
}

/// The outcome of StartTraining: the job, and the validation report when this call
/// validated (a repeated request returns the existing job without one).
#[derive(Debug)]
pub struct Started {
    /// The job, new or the one the request id already named.
    pub job: Job,
    /// The validation report, when this call validated the datasets.
    pub report: Option<Report>,
}

/// The writes of the training lifecycle, which need a provider: starting, polling,
/// cancelling and adopting jobs. Reads go through its [`JobReader`].
pub struct JobManager {
    store: Arc<dyn Store>,
    provider: Arc<dyn FineTuning>,
    catalog: Arc<Catalog>,
    datasets: DatasetStore,
    hub: Arc<Hub>,
    config: JobsConfig,
    poller: Arc<Poller>,
    reader: JobReader,
    /// Creations in progress, by job id: one task per job, joined by repeated calls.
    creations: Mutex<HashMap<String, CreationTask>>,
    shutdown: CancellationToken,
}

impl JobManager {
    /// A manager over `store` and `provider`; nothing runs until [`JobManager::resume`] or a call.
    pub fn new(
        store: Arc<dyn Store>,
        provider: Arc<dyn FineTuning>,
        catalog: Arc<Catalog>,
        datasets: DatasetStore,
        config: JobsConfig,
        shutdown: CancellationToken,
    ) -> Arc<JobManager> {
        let reader = JobReader::new(store.clone(), config.heartbeat, shutdown.clone());
        let hub = reader.hub().clone();
        let poller = Arc::new(Poller {
            store: store.clone(),
            provider: provider.clone(),
            catalog: catalog.clone(),
            hub: hub.clone(),
            interval: config.poll_interval,
            holder: holder_name(),
            lease_ttl: config.lease_ttl,
            shutdown: shutdown.clone(),
            on_success: OnceLock::new(),
            tasks: Mutex::new(HashMap::new()),
        });
        Arc::new(JobManager {
            store,
            provider,
            catalog,
            datasets,
            hub,
            config,
            poller,
            reader,
            creations: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    /// The reader of the jobs this manager writes: its watchers wake on the manager's
    /// writes.
    pub fn reader(&self) -> &JobReader {
        &self.reader
    }

    /// Sets what happens when a job succeeds (once; later calls are ignored).
    pub fn set_on_success(&self, hook: SuccessHook) {
        let _ = self.poller.on_success.set(hook);
    }

    /// Picks up after a restart: settles interrupted creations nobody else is running,
    /// and polls every unfinished job whose lease this process can take (with other
    /// processes on the store, each job is polled by one of them).
    pub async fn resume(self: &Arc<Self>) -> Result<usize, Error> {
        let mut resumed = 0;
        for job in self.store.creating().await? {
            // Interrupted between reserving and creating: adopt what OpenAI made, if
            // anything; what cannot be told yet is left to the reconciler. A creation
            // another live process is running stays with it.
            if self.holds_lease(&job.id).await {
                if let Creation::Tracked(_) = self.creation(job, Work::Settle).await {
                    resumed += 1;
                }
            }
        }
        resumed += self.poller.claim_lapsed().await?;
        Ok(resumed)
    }

    /// Claims, every poll interval until shutdown, the polling leases that lapsed (their
    /// holder died or lost the database) and polls those jobs; renews this process's.
    pub fn spawn_lease_keeper(self: &Arc<Self>) -> JoinHandle<()> {
        let poller = self.poller.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(poller.interval) => {}
                    () = shutdown.cancelled() => break,
                }
                match poller.claim_lapsed().await {
                    Ok(0) => {}
                    Ok(taken) => info!(taken, "took over the polling of jobs whose lease lapsed"),
                    Err(e) => {
                        warn!(error = %e, "claiming polling leases failed; next round will retry")
                    }
                }
            }
        })
    }

    /// Whether this process holds (now took, or renewed) the lease of `job_id`.
    async fn holds_lease(&self, job_id: &str) -> bool {
        match self
            .store
            .claim_lease(job_id, &self.poller.holder, self.config.lease_ttl)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                warn!(job_id, error = %e, "cannot claim the job's lease");
                false
            }
        }
    }

    /// Settles, every `reconcile_interval` until shutdown, the reservations left
    /// creating for at least that long: adopts the job OpenAI holds for each one's request
    /// id, releases it when OpenAI holds none, and leaves it when OpenAI cannot tell.
    pub fn spawn_reconciler(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        let interval = self.config.reconcile_interval;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = this.shutdown.cancelled() => break,
                }
                match this.reconcile(interval).await {
                    Ok(0) => {}
                    Ok(settled) => info!(settled, "settled reservations left creating"),
                    Err(e) => {
                        warn!(error = %e, "reconciling reservations failed; next round will retry")
                    }
                }
            }
        })
    }

    /// Settles every reservation left creating for at least `min_age` with no creation
    /// running: adopts the job OpenAI holds for its request id, releases it when OpenAI
    /// holds none, and leaves it when OpenAI cannot tell. Returns how many were adopted
    /// or released. (`min_age` spares a creation that is just being set up.)
    pub(crate) async fn reconcile(self: &Arc<Self>, min_age: Duration) -> Result<usize, Error> {
        let cutoff =
            now_millis().saturating_sub(i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX));
        let mut settled = 0;
        for job in self.store.creating().await? {
            if job.created_at > cutoff
                || self.creation_running(&job.id)
                || !self.holds_lease(&job.id).await
            {
                continue;
            }
            match self.creation(job, Work::Settle).await {
                Creation::Tracked(_) | Creation::Released(_) => settled += 1,
                Creation::Unsettled(e) => {
                    warn!(error = %e, "a reservation left creating is still unsettled")
                }
            }
        }
        Ok(settled)
    }

    /// Starts a training job: validates, reserves the request id, uploads and creates it upstream.
    pub async fn start(self: &Arc<Self>, req: StartRequest) -> Result<Started, Error> {
        check_request(&req)?;
        let fingerprint = fingerprint(&req);
        let req = Arc::new(req);
        // A reservation a settle released (OpenAI holds no job for it) is made afresh;
        // that can happen once per settle, so a few rounds are plenty.
        for _ in 0..3 {
            let (job, report) = match self.store.get_by_request(&req.request_id).await? {
                Some((job, existing)) => (same_request(job, &existing, &fingerprint)?, None),
                None => self.reserve(&req, &fingerprint).await?,
            };
            if job.upstream_id.is_some() || job.state.is_terminal() {
                return Ok(Started { job, report });
            }
            // Created by this call, or still being created by an earlier one (whose
            // caller may be gone): wait for that creation, or take it over.
            let work = Work::Create {
                req: req.clone(),
                fresh: report.is_some(),
            };
            match self.creation(job, work).await {
                Creation::Tracked(job) => return Ok(Started { job: *job, report }),
                Creation::Released(Some(e)) | Creation::Unsettled(e) => return Err(e),
                Creation::Released(None) => {}
            }
        }
        Err(Error::OutcomeUnknown {
            message: format!(
                "request_id {} is being settled with OpenAI; call StartTraining again with the same request_id",
                req.request_id
            ),
            retry_after: OUTCOME_RETRY_AFTER,
        })
    }

    /// Validates the request and reserves its request id. Returns the job, with the
    /// report when this call made the reservation (an earlier call's job has none).
    async fn reserve(
        &self,
        req: &StartRequest,
        fingerprint: &str,
    ) -> Result<(Job, Option<Report>), Error> {
        let report = self.validate(req).await?;
        let job = Job {
            request_id: Some(req.request_id.clone()),
            hyperparameters: req.hyperparameters.clone(),
            suffix: req.suffix.clone(),
            seed: req.seed,
            training_sha256: req.training.sha256.clone(),
            validation_sha256: req.validation.as_ref().map(|v| v.sha256.clone()),
            estimated_cost_usd: report.estimated_cost_usd,
            estimated_tokens: report.billed_tokens,
            metadata: req.metadata.clone(),
            accepted_problems: req.accepted.clone(),
            ..Job::creating(req.model.clone(), req.method, now_millis())
        };
        match self.store.reserve(&job, fingerprint).await? {
            Reservation::Inserted => {}
            Reservation::Existing(existing, existing_fp) => {
                return Ok((same_request(*existing, &existing_fp, fingerprint)?, None));
            }
        }
        // A message, not a state change: a job being created shows as validating its
        // files, and it changes state once, when OpenAI holds it (`attach_upstream`).
        let (job, _) = self
            .store
            .record(
                &job,
                job.version,
                vec![message_event(format!(
                    "Accepted: {} examples validated; uploading to OpenAI",
                    report.training.examples
                ))],
            )
            .await?
            .saved()?;
        self.hub.notify(&job.id, job.last_sequence);
        Ok((job, Some(report)))
    }

    /// Whether a creation or settle of `job_id` is in progress.
    fn creation_running(&self, job_id: &str) -> bool {
        self.creations
            .lock()
            .expect("creation map")
            .contains_key(job_id)
    }

    /// The creation of `job` in progress, or a new one doing `work` in its own task. The
    /// task runs to its end whoever waits for it, so a caller that goes away never
    /// strands the reservation.
    fn creation(self: &Arc<Self>, job: Job, work: Work) -> CreationTask {
        let mut creations = self.creations.lock().expect("creation map");
        if let Some(running) = creations.get(&job.id) {
            return running.clone();
        }
        let this = self.clone();
        let job_id = job.id.clone();
        let span = tracing::info_span!("creation", job_id = %job_id);
        let task = tokio::spawn(
            async move {
                let id = job.id.clone();
                let outcome = this.create_or_settle(job, work).await;
                this.creations.lock().expect("creation map").remove(&id);
                outcome
            }
            .instrument(span),
        );
        let shared = async move {
            task.await.unwrap_or_else(|e| {
                Creation::Unsettled(Error::Io(format!("the creation task failed: {e}")))
            })
        }
        .boxed()
        .shared();
        creations.insert(job_id, shared.clone());
        shared
    }

    async fn create_or_settle(self: &Arc<Self>, job: Job, work: Work) -> Creation {
        let job = match self.take_creation(&job.id).await {
            Ok(Some(job)) => job,
            Ok(None) => return Creation::Released(None),
            Err(e) => return Creation::Unsettled(e),
        };
        if job.upstream_id.is_some() {
            self.poller.spawn(&job.id);
            return Creation::Tracked(Box::new(job));
        }
        let Work::Create { req, fresh } = work else {
            return self.settle(job, None).await;
        };
        match self.create_upstream(job.clone(), &req, !fresh).await {
            Ok(job) => {
                info!(
                    job_id = %job.id,
                    upstream_id = job.upstream_id.as_deref().map(tracing::field::display),
                    "training job created"
                );
                self.poller.spawn(&job.id);
                Creation::Tracked(Box::new(job))
            }
            Err(CreateFailure {
                error,
                maybe_created: true,
            }) => self.settle(job, Some(error)).await,
            Err(CreateFailure { error, .. }) => {
                // Nothing was created upstream (or it would have been found and
                // adopted): free the request id so a retry can try again.
                self.release(&job).await;
                Creation::Released(Some(error))
            }
        }
    }

    /// The job to create or settle, once this process holds its lease: while another
    /// process holds it (a StartTraining with the same request id is creating it there),
    /// waits until that process links the job upstream or releases it, or dies and its
    /// lease lapses. So one request id makes one upstream job, whichever replicas its
    /// retries reach. `None` when the job was released.
    async fn take_creation(&self, job_id: &str) -> Result<Option<Job>, Error> {
        let mut wait = Duration::from_millis(50);
        loop {
            // Another task may have finished or released it since it was read.
            let Some(job) = self.store.get(job_id).await? else {
                return Ok(None);
            };
            if job.upstream_id.is_some() || job.state.is_terminal() {
                return Ok(Some(job));
            }
            if self
                .store
                .claim_lease(job_id, &self.poller.holder, self.config.lease_ttl)
                .await?
            {
                return Ok(Some(job));
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.shutdown.cancelled() => {
                    return Err(Error::Unavailable(
                        "the server is shutting down; call StartTraining again with the same request_id".to_owned(),
                    ));
                }
            }
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    /// Settles a reservation OpenAI may hold a job for, by the request id in its
    /// metadata: adopts the job, releases the reservation when OpenAI holds none (with
    /// `failure`, why the creation failed, if any), or leaves it when OpenAI cannot tell.
    async fn settle(self: &Arc<Self>, job: Job, failure: Option<Error>) -> Creation {
        let request_id = job.request_id.clone().unwrap_or_default();
        match self.find_upstream(&request_id).await {
            Ok(Some(remote)) => {
                info!(job_id = %job.id, upstream_id = %remote.id, "adopting the job OpenAI holds for this request id");
                match self.attach_upstream(job, &remote, &[]).await {
                    Ok(job) => {
                        self.poller.spawn(&job.id);
                        Creation::Tracked(Box::new(job))
                    }
                    Err(e) => Creation::Unsettled(e),
                }
            }
            Ok(None) => {
                info!(job_id = %job.id, "OpenAI holds no job for this request id; releasing it");
                self.release(&job).await;
                Creation::Released(failure.map(known_not_created))
            }
            Err(e) => {
                warn!(job_id = %job.id, error = %e, "cannot tell whether OpenAI holds a job for this request id; it stays reserved");
                let why = match failure {
                    Some(f) => format!("{f}; looking it up: {e}"),
                    None => format!("looking it up: {e}"),
                };
                Creation::Unsettled(Error::OutcomeUnknown {
                    message: format!(
                        "OpenAI may have created a job for request_id {request_id}, and it cannot be confirmed yet ({why}); call StartTraining again with the same request_id"
                    ),
                    retry_after: OUTCOME_RETRY_AFTER,
                })
            }
        }
    }

    async fn release(&self, job: &Job) {
        if let Err(e) = self.store.release(&job.id).await {
            warn!(job_id = %job.id, error = %e, "cannot release a failed creation");
        }
        self.hub.notify(&job.id, u64::MAX);
    }

    async fn validate(&self, req: &StartRequest) -> Result<Report, Error> {
        let open = |f: &DatasetFile| -> Result<Input<'static>, Error> {
            let file = std::fs::File::open(&f.path)
                .map_err(|e| Error::Io(format!("cannot open dataset {}: {e}", f.sha256)))?;
            Ok(Input {
                name: f.name.clone(),
                reader: Box::new(file),
            })
        };
        let training = open(&req.training)?;
        let validation = req.validation.as_ref().map(open).transpose()?;
        let options = Options {
            model: req.model.clone(),
            epochs: req.hyperparameters.n_epochs,
            accept: req.accepted.clone(),
            ..Options::default()
        };
        let catalog = self.catalog.clone();
        let report = tokio::task::spawn_blocking(move || {
            dataset::validate(training, validation, &options, &catalog)
        })
        .await
        .map_err(|e| Error::Io(format!("validation task failed: {e}")))??;
        let expected = match req.method {
            Method::Supervised => Format::Chat,
            Method::Dpo => Format::Preference,
        };
        let mut violations: Vec<(String, String, String)> = report
            .problems
            .iter()
            .filter(|p| p.severity == dataset::Severity::Error && !p.accepted)
            .take(100)
            .map(|p| {
                let file = match p.dataset {
                    dataset::Role::Training => "training",
                    dataset::Role::Validation => "validation",
                };
                let subject = if p.path.is_empty() {
                    format!("{file}:{}", p.line)
                } else {
                    format!("{file}:{}:{}", p.line, p.path)
                };
                (p.code.as_str().to_owned(), subject, p.message.clone())
            })
            .collect();
        if let Some(format) = report.format.filter(|f| *f != expected) {
            violations.insert(
                0,
                (
                    "method_format_mismatch".to_owned(),
                    "training".to_owned(),
                    format!(
                        "method {} needs {} examples, but the file is {}",
                        req.method.as_str(),
                        expected.describe(),
                        format.describe()
                    ),
                ),
            );
        }
        if report.has_errors() || !violations.is_empty() {
            let message = format!(
                "the dataset has {} error(s) ({}); fix them and try again (ValidateDataset gives the full report)",
                report.error_count.max(1),
                violations
                    .first()
                    .map_or(String::new(), |(code, subject, _)| format!(
                        "first: {code} at {subject}"
                    ))
            );
            return Err(Error::FailedPrecondition {
                message,
                reason: Precondition::DatasetInvalid,
                violations,
            });
        }
        Ok(report)
    }

    /// Uploads the files (once per content) and creates the job, adopting one OpenAI
    /// already made for this request id. `unsettled`: an earlier creation of this
    /// reservation may have made a job. A failure says whether a job may exist anyway.
    async fn create_upstream(
        &self,
        mut job: Job,
        req: &StartRequest,
        unsettled: bool,
    ) -> Result<Job, CreateFailure> {
        let unsettled_by = |error: Error| CreateFailure {
            error,
            maybe_created: unsettled,
        };
        let mut notes = Vec::new();
        let training_file = self
            .upload(&req.training, &mut notes)
            .await
            .map_err(unsettled_by)?;
        let validation_file = match &req.validation {
            Some(v) => Some(self.upload(v, &mut notes).await.map_err(unsettled_by)?),
            None => None,
        };
        job.training_file_id = Some(training_file.clone());
        job.validation_file_id = validation_file.clone();

        let mut metadata = req.metadata.clone();
        metadata.insert(META_REQUEST_ID.to_owned(), req.request_id.clone());
        metadata.insert(META_JOB_ID.to_owned(), job.id.clone());
        let create = NewJob {
            model: req.model.clone(),
            training_file,
            validation_file,
            suffix: req.suffix.clone(),
            seed: req.seed,
            method: req.method,
            hyperparameters: req.hyperparameters.clone(),
            metadata,
        };
        // Creating a job is not idempotent upstream, so every attempt first looks for the
        // job a lost earlier attempt (or a crash) may have made, by the request id in its
        // metadata; only when there is none is it created. `unsettled` is whether an
        // attempt may have created a job no look-up has ruled out since.
        let unsettled = AtomicBool::new(unsettled);
        let remote = self
            .config
            .retry
            .run("fine-tuning job creation", None, || async {
                if let Some(remote) = self.find_upstream(&req.request_id).await? {
                    info!(job_id = %job.id, upstream_id = %remote.id, "adopting the job OpenAI already has for this request id");
                    return Ok(remote);
                }
                unsettled.store(false, Ordering::SeqCst);
                match self.provider.create_job(&create).await {
                    Ok(remote) => Ok(remote),
                    Err(e) => {
                        if e.may_have_taken_effect() {
                            unsettled.store(true, Ordering::SeqCst);
                        }
                        if e.is_retryable() {
                            warn!(job_id = %job.id, error = %e, "job creation failed; will look for it before trying again");
                        }
                        Err(Failure::from(e))
                    }
                }
            })
            .await
            .map_err(|e| CreateFailure {
                error: e.into(),
                maybe_created: unsettled.load(Ordering::SeqCst),
            })?;
        self.attach_upstream(job, &remote, &notes)
            .await
            .map_err(|error| CreateFailure {
                error,
                maybe_created: true,
            })
    }

    /// A fine-tuning file named `name` of `size` bytes that OpenAI did not reject, among
    /// the most recent ones (a lost upload is recent).
    async fn find_uploaded(
        &self,
        name: &str,
        size: u64,
    ) -> Result<Option<RemoteFile>, UpstreamError> {
        let page = self
            .provider
            .list_files(None, 100)
            .await
            .map_err(lookup_failed)?;
        let now = now_millis() / 1000;
        Ok(page
            .data
            .into_iter()
            .find(|f| f.filename == name && f.bytes == size && unusable(f, now).is_none()))
    }

    /// OpenAI's job carrying `request_id` in its metadata, if any.
    async fn find_upstream(&self, request_id: &str) -> Result<Option<RemoteJob>, UpstreamError> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let filter = vec![(META_REQUEST_ID.to_owned(), request_id.to_owned())];
        let page = self
            .provider
            .list_jobs(None, 10, &filter)
            .await
            .map_err(lookup_failed)?;
        Ok(page.data.into_iter().find(|j| {
            j.metadata
                .get(META_REQUEST_ID)
                .is_some_and(|r| r == request_id)
        }))
    }

    /// Attaches OpenAI's job `remote` to `job`, recording `notes` (what happened on the
    /// way, for the user) as messages before the state change announcing the job.
    async fn attach_upstream(
        &self,
        mut job: Job,
        remote: &RemoteJob,
        notes: &[String],
    ) -> Result<Job, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let mut attached = job.clone();
            attached.upstream_id = Some(remote.id.clone());
            if attached.training_file_id.is_none() {
                attached.training_file_id = Some(remote.training_file.clone());
            }
            if attached.validation_file_id.is_none() {
                attached.validation_file_id = remote.validation_file.clone();
            }
            apply_remote(&mut attached, remote, &self.catalog);
            let message = format!(
                "Created OpenAI fine-tuning job {} ({})",
                remote.id, remote.status
            );
            let mut events: Vec<NewEvent> = notes
                .iter()
                .map(|note| message_event(note.clone()))
                .collect();
            events.push(state_event(&attached, message));
            match self.store.record(&attached, job.version, events).await? {
                Recorded::Saved(saved, _) => {
                    self.hub.notify(&saved.id, saved.last_sequence);
                    return Ok(saved);
                }
                // Another writer (a retry of the same request, the resume) attached it first.
                Recorded::Conflict(current) | Recorded::Finished(current)
                    if current.upstream_id.is_some() =>
                {
                    return Ok(current);
                }
                Recorded::Conflict(current) | Recorded::Finished(current) => job = current,
            }
        }
        Err(Error::Io(format!(
            "job store: job {} kept changing while OpenAI job {} was attached to it",
            job.id, remote.id
        )))
    }

    /// Why OpenAI's file `id` cannot be trained from (gone, expired or expiring soon),
    /// or None when it can.
    async fn unusable_upload(&self, id: &str) -> Result<Option<String>, Error> {
        // The adapter retries what is safe to retry.
        let looked_up = self.provider.get_file(id).await;
        match looked_up {
            Ok(file) => Ok(unusable(&file, now_millis() / 1000)),
            Err(UpstreamError::NotFound { .. }) => Ok(Some("is gone upstream".to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Uploads a dataset as the provider takes it (see `FineTuning::prepare_upload`), once
    /// per content. A remembered
    /// upload is reused only while OpenAI still has it; when it does not, the dataset is
    /// uploaded again and `notes` says so.
    async fn upload(&self, file: &DatasetFile, notes: &mut Vec<String>) -> Result<String, Error> {
        let PreparedUpload {
            path,
            sha256,
            temporary,
        } = self
            .provider
            .prepare_upload(&file.path, &file.sha256, self.datasets.dir())
            .await?;
        let result = async {
            let mut stale = None;
            if let Some(id) = self.store.uploaded_file(&sha256).await? {
                match self.unusable_upload(&id).await? {
                    None => return Ok(id),
                    Some(why) => stale = Some((id, why)),
                }
            }
            let name = format!("{}.jsonl", &sha256[..16]);
            let size = tokio::fs::metadata(&path)
                .await
                .map_err(|e| Error::Io(format!("cannot read dataset {sha256}: {e}")))?
                .len();
            // Uploads are not idempotent either: each attempt first looks for the file a
            // lost earlier one may have stored (same content-derived name and size).
            let uploaded = self
                .config
                .retry
                .run("dataset upload", None, || async {
                    if let Some(file) = self.find_uploaded(&name, size).await? {
                        info!(file_id = %file.id, "the dataset is already on OpenAI; using it");
                        return Ok(file);
                    }
                    Ok(self.provider.upload_file(&path, &name).await?)
                })
                .await;
            let uploaded = match uploaded {
                Ok(file) => file,
                // The last attempt's answer was lost: it may have stored the file.
                Err(e) if e.may_have_taken_effect() => match self.find_uploaded(&name, size).await {
                    Ok(Some(file)) => file,
                    Ok(None) => return Err(known_not_created(e.into())),
                    Err(lookup) => {
                        return Err(Error::OutcomeUnknown {
                            message: format!(
                                "the dataset upload's answer was lost ({e}) and OpenAI's file list cannot be read ({lookup}); call StartTraining again with the same request_id"
                            ),
                            retry_after: OUTCOME_RETRY_AFTER,
                        });
                    }
                },
                Err(e) => return Err(e.into()),
            };
            self.store.remember_upload(&sha256, &uploaded.id).await?;
            info!(file_id = %uploaded.id, bytes = uploaded.bytes, "uploaded dataset to OpenAI");
            if let Some((old, why)) = stale {
                let note = format!(
                    "The remembered upload {old} of this dataset {why}; uploaded again as {}",
                    uploaded.id
                );
                warn!(old_file_id = %old, file_id = %uploaded.id, "{note}");
                notes.push(note);
            }
            Ok(uploaded.id)
        }
        .await;
        if temporary {
            let _ = tokio::fs::remove_file(&path).await;
        }
        result
    }

    /// How many jobs the store holds in each state (see [`JobReader::count_by_state`]).
    pub async fn count_by_state(&self) -> Result<Vec<(String, u64)>, Error> {
        self.reader.count_by_state().await
    }

    /// Adopts a job made outside the service, by the provider's id (OpenAI's
    /// `ftjob-...`): stores it, records its history so far, and polls it while it runs.
    /// Adopting it again gives the same job. This is the one way a job the store does not
    /// hold comes into it; callers reach it when [`JobReader::lookup`] answers
    /// [`Lookup::Outside`].
    pub async fn adopt(self: &Arc<Self>, upstream_id: &str) -> Result<Job, Error> {
        let id = upstream_id;
        if !self.provider.is_job_id(id) {
            return Err(not_found(id));
        }
        let remote = self.provider.get_job(id).await.map_err(|e| match e {
            UpstreamError::NotFound { .. } => Error::NotFound {
                what: format!("job {id} (not at OpenAI either)"),
                missing: Missing::Job(id.to_owned()),
            },
            other => other.into(),
        })?;
        let job = Job {
            upstream_id: Some(remote.id.clone()),
            suffix: remote.suffix.clone(),
            seed: remote.seed,
            training_file_id: Some(remote.training_file.clone()),
            validation_file_id: remote.validation_file.clone(),
            metadata: remote.metadata.clone(),
            created_at: remote.created_at.saturating_mul(1000).max(1),
            ..Job::creating(remote.model.clone(), remote.method, now_millis())
        };
        let stored = self.store.adopt(&job).await?;
        if stored.id != job.id {
            // Adopted already (by another call, or earlier).
            return Ok(stored);
        }
        let adopted = self.attach_upstream(stored, &remote, &[]).await?;
        info!(job_id = %adopted.id, upstream_id = %remote.id, "adopted a job created outside the service");
        // Record its history now; keep polling if it is still going.
        let terminal = self.poller.poll_once(&adopted.id).await.unwrap_or(false);
        if !terminal {
            self.poller.spawn(&adopted.id);
        }
        self.store
            .get(&adopted.id)
            .await?
            .ok_or_else(|| Error::Io("adopted job vanished".to_owned()))
    }

    /// Cancels the job `id` names (this service's id or the provider's); a job made
    /// outside the service is adopted first.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<Job, Error> {
        let job = match self.reader.lookup(id).await? {
            Lookup::Stored(job) => *job,
            Lookup::Outside => self.adopt(id).await?,
        };
        if job.state.is_terminal() {
            return Err(Error::FailedPrecondition {
                message: format!(
                    "job {} has already {}; only unfinished jobs can be cancelled",
                    job.id,
                    job.state.as_str()
                ),
                reason: Precondition::JobFinished,
                violations: Vec::new(),
            });
        }
        let Some(upstream_id) = job.upstream_id.clone() else {
            return Err(Error::FailedPrecondition {
                message: format!(
                    "job {} is still being created; cancel it in a moment",
                    job.id
                ),
                reason: Precondition::JobCreating,
                violations: Vec::new(),
            });
        };
        let remote = self.provider.cancel_job(&upstream_id).await?;
        // A poll may write between our read and our write: re-read and re-apply the
        // cancellation rather than overwrite it. The write records what OpenAI logged up
        // to the cancellation (events, checkpoints) before the terminal event, so that
        // event stays the last of the log.
        let mut job = job;
        for _ in 0..WRITE_ATTEMPTS {
            let (mut updated, events) = self.poller.catch_up(&job, &remote).await?;
            let events = with_state_changes(&job, &mut updated, events, |_| {
                format!("Cancelled on request ({})", remote.status)
            });
            match self.store.record(&updated, job.version, events).await? {
                Recorded::Saved(saved, _) => {
                    self.hub.notify(&saved.id, saved.last_sequence);
                    return Ok(saved);
                }
                // The poller recorded the end first (it saw the cancellation upstream).
                Recorded::Finished(current) => return Ok(current),
                Recorded::Conflict(current) => job = current,
            }
        }
        Err(Error::Io(format!(
            "job store: job {} kept changing while its cancellation was recorded; OpenAI has cancelled it and the poller will record that",
            job.id
        )))
    }

    /// One poll of the job (see the poller): records what OpenAI has new for it and
    /// returns whether the job is finished.
    pub async fn poll_once(&self, job_id: &str) -> Result<bool, Error> {
        self.poller.poll_once(job_id).await
    }

    /// Stops every poller and gives up this process's polling leases (on shutdown), so
    /// other processes on the store take the jobs over at once; jobs go on upstream.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.poller.stop().await;
    }
}

/// This process's name in the lease table: the pid for people reading it, a random part
/// so that a restarted process with a recycled pid is not taken for its predecessor.
fn holder_name() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("pid{}-{}", std::process::id(), &id[..12])
}

/// Every job `provider` holds, by the request id this service put in its metadata (jobs
/// without one under `""`): what checks that a request id made exactly one paid job use.
pub async fn jobs_by_request_id(
    provider: &dyn FineTuning,
) -> Result<BTreeMap<String, Vec<String>>, UpstreamError> {
    let mut by_request: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = provider.list_jobs(after.as_deref(), 100, &[]).await?;
        for job in &page.data {
            let request = job
                .metadata
                .get(META_REQUEST_ID)
                .cloned()
                .unwrap_or_default();
            by_request.entry(request).or_default().push(job.id.clone());
        }
        if !page.has_more {
            return Ok(by_request);
        }
        after = page.data.last().map(|j| j.id.clone());
    }
}

/// A failed look-up. Reading is safe to repeat, so an unreadable page counts as OpenAI
/// being unavailable (retried, and UNAVAILABLE for the caller, who retries with the same
/// request id), not as a protocol error nobody retries.
fn lookup_failed(error: UpstreamError) -> UpstreamError {
    match error {
        UpstreamError::Protocol { provider, message } => UpstreamError::Unavailable {
            provider,
            status: None,
            message: format!("a look-up's answer could not be read: {message}"),
        },
        other => other,
    }
}

/// A create that failed after sending, once OpenAI is known to hold nothing for it: an
/// ordinary unavailability the caller may retry, no longer an unknown outcome.
fn known_not_created(error: Error) -> Error {
    match error {
        Error::Upstream(UpstreamError::Unconfirmed { provider, message }) => {
            Error::Upstream(UpstreamError::Unavailable {
                provider,
                status: None,
                message: format!("{message} (nothing was created; try again)"),
            })
        }
        other => other,
    }
}

/// The job holding a request id, if the request is the same one.
fn same_request(job: Job, existing: &str, fingerprint: &str) -> Result<Job, Error> {
    if existing == fingerprint {
        Ok(job)
    } else {
        Err(Error::AlreadyExists {
            request_id: job.request_id.unwrap_or_default(),
            job_id: job.id,
        })
    }
}

/// An event of this service's own telling, with no change of state.
fn message_event(message: String) -> NewEvent {
    NewEvent {
        kind: EventKind::Message,
        created_at: now_millis(),
        level: "info".to_owned(),
        message,
        upstream_id: None,
        metrics: None,
        checkpoint: None,
        job: None,
    }
}

fn check_request(req: &StartRequest) -> Result<(), Error> {
    if req.request_id.is_empty() || req.request_id.chars().count() > 128 {
        return Err(Error::invalid(
            "request_id",
            "required, 1 to 128 characters (a UUID is a good choice)",
        ));
    }
    if req.model.is_empty() {
        return Err(Error::invalid("model", "required"));
    }
    if let Some(s) = &req.suffix {
        if s.is_empty() || s.chars().count() > 64 {
            return Err(Error::invalid("suffix", "1 to 64 characters"));
        }
    }
    let h = &req.hyperparameters;
    if h.n_epochs.is_some_and(|n| !(1..=50).contains(&n)) {
        return Err(Error::invalid("hyperparameters.n_epochs", "must be 1..50"));
    }
    if h.batch_size.is_some_and(|n| !(1..=256).contains(&n)) {
        return Err(Error::invalid(
            "hyperparameters.batch_size",
            "must be 1..256",
        ));
    }
    if h.learning_rate_multiplier
        .is_some_and(|x| !(x > 0.0 && x.is_finite()))
    {
        return Err(Error::invalid(
            "hyperparameters.learning_rate_multiplier",
            "must be > 0",
        ));
    }
    if let Some(beta) = h.beta {
        if req.method != Method::Dpo {
            return Err(Error::invalid(
                "hyperparameters.beta",
                "only applies to the dpo method",
            ));
        }
        if !(beta > 0.0 && beta <= 2.0) {
            return Err(Error::invalid("hyperparameters.beta", "must be in (0, 2]"));
        }
    }
    if req.metadata.len() > MAX_USER_METADATA {
        return Err(Error::invalid(
            "metadata",
            format!(
                "at most {MAX_USER_METADATA} pairs, got {} (OpenAI allows {OPENAI_MAX_METADATA}; {META_REQUEST_ID} and {META_JOB_ID} are the service's)",
                req.metadata.len()
            ),
        ));
    }
    for (k, v) in &req.metadata {
        if k.is_empty() || k.chars().count() > 64 || v.chars().count() > 512 {
            return Err(Error::invalid(
                format!("metadata.{k}"),
                "keys are 1-64 characters, values at most 512",
            ));
        }
        if k.starts_with("finetune_") {
            return Err(Error::invalid(
                format!("metadata.{k}"),
                "keys starting with finetune_ are reserved for the service",
            ));
        }
    }
    Ok(())
}

/// Identifies what a request asks for, so a reused request id with other parameters is caught.
fn fingerprint(req: &StartRequest) -> String {
    let mut value = serde_json::json!({
        "training": req.training.sha256,
        "validation": req.validation.as_ref().map(|v| &v.sha256),
        "model": req.model,
        "method": req.method,
        "hyperparameters": req.hyperparameters,
        "suffix": req.suffix,
        "seed": req.seed,
        "metadata": req.metadata,
    });
    // Only when there are any, so requests made before acceptances existed keep their
    // fingerprint.
    if !req.accepted.is_empty() {
        value["accepted_problems"] = serde_json::json!(req.accepted);
    }
    hex::encode(Sha256::digest(value.to_string().as_bytes()))
}

/// Why a file OpenAI holds cannot be trained from at unix second `now`, or None.
fn unusable(file: &RemoteFile, now: i64) -> Option<String> {
    if file.rejected {
        return Some("was rejected by OpenAI".to_owned());
    }
    let expires_at = file.expires_at?;
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(expires_at.max(0).unsigned_abs()),
    );
    if expires_at <= now {
        Some(format!("expired at {when}"))
    } else if expires_at - now < REUSE_MARGIN_SECS {
        Some(format!(
            "expires at {when}, too soon for a job that may queue for hours"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(request_id: &str) -> StartRequest {
        let file = DatasetFile {
            path: PathBuf::from("train.jsonl"),
            sha256: "0".repeat(64),
            name: "train.jsonl".to_owned(),
        };
        StartRequest {
            request_id: request_id.to_owned(),
            training: file,
            validation: None,
            model: "gpt-4o-mini".to_owned(),
            method: Method::Supervised,
            hyperparameters: Hyperparameters::default(),
            suffix: None,
            seed: None,
            metadata: BTreeMap::new(),
            accepted: Vec::new(),
        }
    }

    fn refused_field(req: &StartRequest) -> Option<String> {
        match check_request(req) {
            Ok(()) => None,
            Err(Error::InvalidArgument { field, .. }) => Some(field),
            Err(other) => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn request_ids_are_measured_in_characters() {
        // 128 two-byte characters are 256 bytes: the contract counts characters.
        assert_eq!(refused_field(&request(&"é".repeat(128))), None);
        assert_eq!(
            refused_field(&request(&"é".repeat(129))).as_deref(),
            Some("request_id")
        );
    }
}
