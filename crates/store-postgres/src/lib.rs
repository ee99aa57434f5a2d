//! The job store in PostgreSQL, shared by any number of `finetune serve` replicas.
//!
//! Every cross-replica rule lives in the database, never in one process's memory:
//! - a request id is reserved by the `UNIQUE` constraint on `jobs.request_id`;
//! - a write is a compare-and-set on `jobs.version` (one conditional `UPDATE`), and event
//!   sequence numbers come from the job row it locks, so they are gap-free and ordered per job;
//! - a polling lease is a row whose expiry is reckoned on the database's clock;
//! - every write other replicas must learn of sends a notice on the [`CHANNEL`] channel in
//!   its own transaction (delivered only if it commits), which [`Store::listen`] turns into
//!   [`Change`]s;
//! - uploaded dataset bytes are rows too ([`SharedDatasets`]: 1 MiB chunks, written in one
//!   transaction), so a dataset uploaded through one replica trains through any other.
//!
//! [`PgStore::connect`] applies pending migrations (a first start works with nothing run
//! beforehand); [`PgStore::migrate`] applies them alone, for `finetune migrate` ahead of a
//! rolling upgrade. Both take sqlx's PostgreSQL advisory lock, so replicas starting together
//! migrate once, and both refuse a database migrated by a newer build.

#![warn(missing_docs)]

mod notice;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use finetune_core::domain::job::{Job, JobEvent, JobState, NewEvent, now_millis};
use finetune_core::domain::served::{Served, TierStats};
use finetune_core::error::{Error, Missing};
use finetune_core::store::{
    Change, JobPage, Recorded, Reservation, SharedDatasets, Store, check_write,
};

pub use notice::CHANNEL;

/// The migrations of this build, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// The terminal states, as the `state` column holds them.
const FINISHED: &str = "('succeeded', 'failed', 'cancelled')";

/// The database's clock in unix milliseconds, as the lease columns hold time. `now()` is the
/// transaction's start, the same for every use within one statement. (A macro, so that
/// `concat!` can build the constants below.)
macro_rules! now_ms {
    () => {
        "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT"
    };
}
const NOW_MS: &str = now_ms!();

/// How a claim meets an existing lease: it takes it only when it is the claimer's own (a
/// renewal) or has lapsed, and returns the ids it holds.
const TAKE_LEASE: &str = concat!(
    "ON CONFLICT (job_id) DO UPDATE
         SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
         WHERE job_leases.holder = EXCLUDED.holder OR job_leases.expires_at < ",
    now_ms!(),
    "
     RETURNING job_id"
);

/// The size of a dataset chunk row: small enough to read and write without holding a whole
/// dataset in memory, big enough that a dataset is few rows.
const DATASET_CHUNK: usize = 1 << 20;

/// How many changes [`Store::listen`] holds for a slow reader before it reports
/// [`Change::Lagged`] instead.
const CHANGES_BUFFER: usize = 4096;

/// The connection pool's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections the pool opens at most (a listener from [`Store::listen`] holds one more
    /// of its own).
    pub max_connections: u32,
    /// How long a query waits for a free connection before it fails.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> PoolSettings {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// What [`PgStore::migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version before (0 for an empty database).
    pub from: i64,
    /// The schema version now: the newest migration this build knows.
    pub to: i64,
}

/// The core's [`Store`] in a PostgreSQL database; cheap to clone (clones share the pool and
/// count as one process for [`Store::listen`]).
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Kept for the listener's own connection (the URL may hold a password: never printed).
    options: Arc<PgConnectOptions>,
    settings: PoolSettings,
    /// This process's mark on the notices it sends, so its listener skips its own writes
    /// (its writers already tell its watchers in process).
    origin: Arc<str>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("settings", &self.settings)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn db_err(e: sqlx::Error) -> Error {
    Error::Io(format!("job store: {e}"))
}

fn json_err(e: serde_json::Error) -> Error {
    Error::Io(format!("job store: corrupt record: {e}"))
}

fn options(url: &str) -> Result<PgConnectOptions, Error> {
    // The parse error names the part at fault, never the URL (it may hold a password).
    PgConnectOptions::from_str(url)
        .map(|o| o.application_name("finetune"))
        .map_err(|e| Error::Io(format!("the job store's database URL is not valid: {e}")))
}

/// Names the server the connection was for (host, port and database, never the password):
/// sqlx's "pool timed out" alone does not say where it tried.
fn connect_err(options: &PgConnectOptions) -> impl Fn(sqlx::Error) -> Error + '_ {
    move |e| {
        Error::Io(format!(
            "cannot connect to the job store's database {} on {}:{}: {e}",
            options.get_database().unwrap_or("(default)"),
            options.get_host(),
            options.get_port()
        ))
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://...`) and applies the migrations it
    /// lacks, refusing a schema newer than this build knows.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<PgStore, Error> {
        let options = options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(connect_err(&options))?;
        apply_migrations(&pool).await?;
        Ok(PgStore {
            pool,
            options: Arc::new(options),
            settings,
            origin: uuid::Uuid::new_v4().simple().to_string().into(),
        })
    }

    /// Applies the migrations the database at `url` lacks (`finetune migrate`), refusing a
    /// schema newer than this build knows. Safe while other replicas run or migrate: sqlx
    /// holds a PostgreSQL advisory lock while it migrates.
    pub async fn migrate(url: &str) -> Result<Migrated, Error> {
        let options = options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(connect_err(&options))?;
        let migrated = apply_migrations(&pool).await;
        pool.close().await;
        migrated
    }

    /// The newest migration this build knows: the schema version it runs on.
    pub fn schema_version() -> i64 {
        MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }

    async fn notify(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        change: &Change,
    ) -> Result<(), Error> {
        // Delivered when (and only if) the transaction commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(notice::encode(&self.origin, change))
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(db_err)
    }
}

/// The version of the newest migration applied (0 when none: an empty database).
async fn applied_version(pool: &PgPool) -> Result<i64, Error> {
    // An empty database has no migrations table yet; any other failure is an error.
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(db_err)?;
    if !migrated {
        return Ok(0);
    }
    sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map(Option::unwrap_or_default)
        .map_err(db_err)
}

async fn apply_migrations(pool: &PgPool) -> Result<Migrated, Error> {
    let from = applied_version(pool).await?;
    let known = PgStore::schema_version();
    // Refused here with a clear message: this build would misread what it does not know
    // (sqlx would refuse too, naming only the missing migration).
    if from > known {
        return Err(Error::Io(format!(
            "the job store's schema is at version {from}, newer than this build knows \
             ({known}): run the finetune release that migrated it, or a newer one"
        )));
    }
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| Error::Io(format!("job store migration failed: {e}")))?;
    Ok(Migrated { from, to: known })
}

fn decode_job(row: &PgRow) -> Result<Job, Error> {
    let snapshot: String = row.try_get("snapshot").map_err(db_err)?;
    serde_json::from_str(&snapshot).map_err(json_err)
}

fn count(row: &PgRow, name: &str) -> Result<u64, Error> {
    let n: i64 = row.try_get(name).map_err(db_err)?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// A duration in whole milliseconds, as the lease columns hold time.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn reserve(&self, job: &Job, fingerprint: &str) -> Result<Reservation, Error> {
        let snapshot = serde_json::to_string(job).map_err(json_err)?;
        // A reservation released between our failed insert and our read leaves the id free
        // again: try again (a few times; each round means another writer made progress).
        for _ in 0..3 {
            let mut tx = self.pool.begin().await.map_err(db_err)?;
            // The UNIQUE constraint decides between concurrent reservations of one request
            // id: an insert that meets an uncommitted one waits for it to commit (then does
            // nothing) or to roll back (then inserts).
            let inserted = sqlx::query(
                "INSERT INTO jobs (id, request_id, request_fingerprint, upstream_id, state, created_at, last_sequence, snapshot)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (request_id) DO NOTHING",
            )
            .bind(&job.id)
            .bind(&job.request_id)
            .bind(fingerprint)
            .bind(&job.upstream_id)
            .bind(job.state.as_str())
            .bind(job.created_at)
            .bind(job.last_sequence as i64)
            .bind(&snapshot)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            if inserted.rows_affected() == 1 {
                for accepted in &job.accepted_problems {
                    sqlx::query(
                        "INSERT INTO job_accepted_problems (job_id, dataset, line, code) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&job.id)
                    .bind(match accepted.dataset {
                        finetune_core::dataset::Role::Training => "training",
                        finetune_core::dataset::Role::Validation => "validation",
                    })
                    .bind(i64::from(accepted.line))
                    .bind(accepted.code.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                tx.commit().await.map_err(db_err)?;
                return Ok(Reservation::Inserted);
            }
            tx.rollback().await.map_err(db_err)?;
            if let Some((existing, fingerprint)) = self
                .get_by_request(job.request_id.as_deref().unwrap_or_default())
                .await?
            {
                return Ok(Reservation::Existing(Box::new(existing), fingerprint));
            }
        }
        Err(Error::Io(format!(
            "job store: the reservation of request id {:?} kept changing under us",
            job.request_id.as_deref().unwrap_or_default()
        )))
    }

    async fn adopt(&self, job: &Job) -> Result<Job, Error> {
        let snapshot = serde_json::to_string(job).map_err(json_err)?;
        sqlx::query(
            "INSERT INTO jobs (id, request_id, request_fingerprint, upstream_id, state, created_at, last_sequence, snapshot)
             VALUES ($1, NULL, NULL, $2, $3, $4, $5, $6) ON CONFLICT (upstream_id) DO NOTHING",
        )
        .bind(&job.id)
        .bind(&job.upstream_id)
        .bind(job.state.as_str())
        .bind(job.created_at)
        .bind(job.last_sequence as i64)
        .bind(snapshot)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        let upstream = job.upstream_id.as_deref().unwrap_or_default();
        self.get_by_upstream(upstream)
            .await?
            .ok_or_else(|| Error::Io("job store: adopted job vanished".to_owned()))
    }

    async fn release(&self, job_id: &str) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        for table in ["job_accepted_problems", "job_leases", "job_events"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE job_id = $1"
            )))
            .bind(job_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        let deleted = sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(job_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if deleted.rows_affected() == 1 {
            let released = Change::Released {
                job_id: job_id.to_owned(),
            };
            self.notify(&mut tx, &released).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn get(&self, id: &str) -> Result<Option<Job>, Error> {
        let row = sqlx::query("SELECT snapshot FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(decode_job).transpose()
    }

    async fn get_by_request(&self, request_id: &str) -> Result<Option<(Job, String)>, Error> {
        let row =
            sqlx::query("SELECT snapshot, request_fingerprint FROM jobs WHERE request_id = $1")
                .bind(request_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        match row {
            Some(row) => {
                let fingerprint: Option<String> =
                    row.try_get("request_fingerprint").map_err(db_err)?;
                Ok(Some((decode_job(&row)?, fingerprint.unwrap_or_default())))
            }
            None => Ok(None),
        }
    }

    async fn get_by_upstream(&self, upstream_id: &str) -> Result<Option<Job>, Error> {
        let row = sqlx::query("SELECT snapshot FROM jobs WHERE upstream_id = $1")
            .bind(upstream_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(decode_job).transpose()
    }

    async fn list(
        &self,
        state: Option<JobState>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<JobPage, Error> {
        let (before_time, before_id) =
            JobPage::position(cursor)?.unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(
            "SELECT snapshot FROM jobs
             WHERE ($1 OR (created_at, id) < ($2, $3))
               AND ($4::TEXT IS NULL OR state = $4)
             ORDER BY created_at DESC, id DESC LIMIT $5",
        )
        .bind(cursor.is_none())
        .bind(before_time)
        .bind(&before_id)
        .bind(state.map(JobState::as_str))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let jobs = rows.iter().map(decode_job).collect::<Result<Vec<_>, _>>()?;
        Ok(JobPage::of(jobs, limit))
    }

    async fn unfinished(&self) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT snapshot FROM jobs WHERE state NOT IN {FINISHED} ORDER BY created_at, id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(decode_job).collect()
    }

    async fn creating(&self) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT snapshot FROM jobs WHERE upstream_id IS NULL AND state NOT IN {FINISHED}
             ORDER BY created_at, id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(decode_job).collect()
    }

    async fn count_by_state(&self) -> Result<Vec<(String, u64)>, Error> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        rows.iter()
            .map(|row| Ok((row.try_get("state").map_err(db_err)?, count(row, "n")?)))
            .collect()
    }

    async fn record(
        &self,
        job: &Job,
        read_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Recorded, Error> {
        // READ COMMITTED is enough: the conditional UPDATE below locks the job row. A
        // concurrent writer's UPDATE waits for this transaction, then re-evaluates its
        // WHERE against the row this one committed; the version has moved on, so it
        // matches nothing and that writer gets Conflict (or Finished). Until then no one
        // else appends to this job's log, so the sequence numbers taken from the row are
        // gap-free and ordered.
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let claimed: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET version = version + 1
             WHERE id = $1 AND version = $2 AND state NOT IN {FINISHED}
             RETURNING last_sequence"
        )))
        .bind(&job.id)
        .bind(read_version as i64)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(claimed) = claimed else {
            // A new statement, so a new snapshot: the write that came first is visible.
            let current = sqlx::query("SELECT snapshot FROM jobs WHERE id = $1")
                .bind(&job.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
            tx.rollback().await.map_err(db_err)?;
            let Some(current) = current.as_ref().map(decode_job).transpose()? else {
                return Err(Error::NotFound {
                    what: format!("job {}", job.id),
                    missing: Missing::Job(job.id.clone()),
                });
            };
            return Ok(if current.state.is_terminal() {
                Recorded::Finished(current)
            } else {
                Recorded::Conflict(current)
            });
        };
        // Checked once the job is known to be unfinished (a write to a finished one is
        // `Finished`, whatever its events); an error drops the transaction, unwritten.
        check_write(job, &events)?;
        let mut last = claimed as u64;
        let mut saved = job.clone();
        saved.version = read_version + 1;
        let mut appended = Vec::with_capacity(events.len());
        for mut event in events {
            if let Some(upstream_id) = &event.upstream_id {
                let seen =
                    sqlx::query("SELECT 1 FROM job_events WHERE job_id = $1 AND upstream_id = $2")
                        .bind(&job.id)
                        .bind(upstream_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                if seen.is_some() {
                    continue;
                }
            }
            last += 1;
            if let Some(snapshot) = event.job.as_mut() {
                snapshot.last_sequence = last;
                snapshot.version = saved.version;
            }
            let recorded = JobEvent {
                job_id: job.id.clone(),
                sequence: last,
                event,
            };
            let body = serde_json::to_string(&recorded).map_err(json_err)?;
            sqlx::query(
                "INSERT INTO job_events (job_id, sequence, upstream_id, body) VALUES ($1, $2, $3, $4)",
            )
            .bind(&job.id)
            .bind(last as i64)
            .bind(&recorded.event.upstream_id)
            .bind(body)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            appended.push(recorded);
        }
        saved.last_sequence = last;
        saved.updated_at = now_millis();
        let snapshot = serde_json::to_string(&saved).map_err(json_err)?;
        sqlx::query(
            "UPDATE jobs SET upstream_id = $1, state = $2, last_sequence = $3, snapshot = $4 WHERE id = $5",
        )
        .bind(&saved.upstream_id)
        .bind(saved.state.as_str())
        .bind(last as i64)
        .bind(snapshot)
        .bind(&saved.id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if !appended.is_empty() {
            let change = Change::Job {
                job_id: saved.id.clone(),
                last_sequence: last,
            };
            self.notify(&mut tx, &change).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(Recorded::Saved(saved, appended))
    }

    async fn events_after(
        &self,
        job_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JobEvent>, Error> {
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM job_events WHERE job_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        )
        .bind(job_id)
        .bind(after as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        bodies
            .iter()
            .map(|body| serde_json::from_str(body).map_err(json_err))
            .collect()
    }

    async fn uploaded_file(&self, sha256: &str) -> Result<Option<String>, Error> {
        sqlx::query_scalar("SELECT file_id FROM uploaded_files WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn remember_upload(&self, sha256: &str, file_id: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO uploaded_files (sha256, file_id, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (sha256) DO UPDATE SET file_id = EXCLUDED.file_id",
        )
        .bind(sha256)
        .bind(file_id)
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(db_err)
    }

    async fn set_tier_model(
        &self,
        tier: &str,
        model: &str,
        job_id: Option<&str>,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO tier_models (tier, model, job_id, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tier) DO UPDATE SET model = EXCLUDED.model, job_id = EXCLUDED.job_id,
             updated_at = EXCLUDED.updated_at",
        )
        .bind(tier)
        .bind(model)
        .bind(job_id)
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        self.notify(&mut tx, &Change::Tiers).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn tier_models(&self) -> Result<Vec<(String, String, Option<String>)>, Error> {
        let rows = sqlx::query("SELECT tier, model, job_id FROM tier_models ORDER BY tier")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tier").map_err(db_err)?,
                    r.try_get("model").map_err(db_err)?,
                    r.try_get("job_id").map_err(db_err)?,
                ))
            })
            .collect()
    }

    async fn record_served(&self, served: &[Served]) -> Result<(), Error> {
        if served.is_empty() {
            return Ok(());
        }
        // One statement for the whole batch (one round trip, atomic): a column per array.
        let column = |f: fn(&Served) -> i64| served.iter().map(f).collect::<Vec<i64>>();
        let text = |f: fn(&Served) -> &str| {
            served
                .iter()
                .map(|s| f(s).to_owned())
                .collect::<Vec<String>>()
        };
        sqlx::query(
            "INSERT INTO served (id, tier, split, provider, model, ok, error_code, fallback,
                 input_tokens, output_tokens, cached_tokens, cache_write_tokens, knowledge_tokens,
                 cost_usd, latency_ms, rating, created_at)
             SELECT id, tier, split, provider, model, ok, error_code, fallback,
                 input_tokens, output_tokens, cached_tokens, cache_write_tokens, knowledge_tokens,
                 cost_usd, latency_ms, NULL, created_at
             FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
                 $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[],
                 $12::BIGINT[], $13::BIGINT[], $14::FLOAT8[], $15::FLOAT8[], $16::BIGINT[])
             AS t (id, tier, split, provider, model, ok, error_code, fallback, input_tokens,
                 output_tokens, cached_tokens, cache_write_tokens, knowledge_tokens, cost_usd,
                 latency_ms, created_at)",
        )
        .bind(text(|s| &s.id))
        .bind(text(|s| &s.tier))
        .bind(text(|s| &s.split))
        .bind(text(|s| &s.provider))
        .bind(text(|s| &s.model))
        .bind(column(|s| i64::from(s.ok)))
        .bind(
            served
                .iter()
                .map(|s| s.error_code.clone())
                .collect::<Vec<Option<String>>>(),
        )
        .bind(column(|s| i64::from(s.fallback)))
        .bind(column(|s| s.input_tokens as i64))
        .bind(column(|s| s.output_tokens as i64))
        .bind(column(|s| s.cached_tokens as i64))
        .bind(column(|s| s.cache_write_tokens as i64))
        .bind(column(|s| s.knowledge_tokens as i64))
        .bind(served.iter().map(|s| s.cost_usd).collect::<Vec<f64>>())
        .bind(served.iter().map(|s| s.latency_ms).collect::<Vec<f64>>())
        .bind(column(|s| s.created_at))
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(db_err)
    }

    async fn rate(
        &self,
        response_id: &str,
        rating: i64,
    ) -> Result<Option<(String, String)>, Error> {
        let row = sqlx::query("UPDATE served SET rating = $1 WHERE id = $2 RETURNING tier, split")
            .bind(rating)
            .bind(response_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| {
            Ok((
                r.try_get("tier").map_err(db_err)?,
                r.try_get("split").map_err(db_err)?,
            ))
        })
        .transpose()
    }

    async fn tier_stats(&self, tier: Option<&str>) -> Result<Vec<TierStats>, Error> {
        // Aggregated here rather than row by row in the process, with the same definitions
        // as the SQLite adapter, so both give identical figures: the model of the latest
        // request; the cost summed in time order (floating-point sums depend on the order);
        // nearest-rank percentiles of the answered requests, which `percentile_disc` is
        // (the ceil(q * n)-th value).
        let rows = sqlx::query(
            "SELECT tier, split,
                 (ARRAY_AGG(model ORDER BY created_at DESC))[1] AS model,
                 COUNT(*) AS requests,
                 COUNT(*) FILTER (WHERE ok = 0) AS errors,
                 COUNT(*) FILTER (WHERE fallback <> 0) AS fallbacks,
                 SUM(input_tokens)::BIGINT AS input_tokens,
                 SUM(output_tokens)::BIGINT AS output_tokens,
                 SUM(cached_tokens)::BIGINT AS cached_tokens,
                 SUM(cache_write_tokens)::BIGINT AS cache_write_tokens,
                 SUM(knowledge_tokens)::BIGINT AS knowledge_tokens,
                 SUM(cost_usd ORDER BY created_at) AS cost_usd,
                 COUNT(*) FILTER (WHERE rating = 1) AS thumbs_up,
                 COUNT(*) FILTER (WHERE rating = -1) AS thumbs_down,
                 PERCENTILE_DISC(0.50) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE ok <> 0) AS p50,
                 PERCENTILE_DISC(0.95) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE ok <> 0) AS p95,
                 PERCENTILE_DISC(0.99) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE ok <> 0) AS p99
             FROM served WHERE ($1::TEXT IS NULL OR tier = $1 OR split = $1)
             GROUP BY tier, split ORDER BY tier, split",
        )
        .bind(tier)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let latency = |name: &str| -> Result<f64, Error> {
                    Ok(r.try_get::<Option<f64>, _>(name)
                        .map_err(db_err)?
                        .unwrap_or(0.0))
                };
                Ok(TierStats {
                    tier: r.try_get("tier").map_err(db_err)?,
                    split: r.try_get("split").map_err(db_err)?,
                    model: r.try_get("model").map_err(db_err)?,
                    requests: count(r, "requests")?,
                    errors: count(r, "errors")?,
                    p50_ms: latency("p50")?,
                    p95_ms: latency("p95")?,
                    p99_ms: latency("p99")?,
                    input_tokens: count(r, "input_tokens")?,
                    output_tokens: count(r, "output_tokens")?,
                    cached_tokens: count(r, "cached_tokens")?,
                    cache_write_tokens: count(r, "cache_write_tokens")?,
                    knowledge_tokens: count(r, "knowledge_tokens")?,
                    cost_usd: r.try_get("cost_usd").map_err(db_err)?,
                    price: None,
                    thumbs_up: count(r, "thumbs_up")?,
                    thumbs_down: count(r, "thumbs_down")?,
                    fallbacks: count(r, "fallbacks")?,
                })
            })
            .collect()
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_err)
    }

    async fn listen(&self) -> Result<Option<mpsc::Receiver<Change>>, Error> {
        // Subscribed before returning, so every write committed from now on is told.
        let listener = subscribe(&self.options, &self.settings).await?;
        let (changes, receiver) = mpsc::channel(CHANGES_BUFFER);
        tokio::spawn(forward_changes(
            listener,
            self.options.clone(),
            self.settings.clone(),
            self.origin.clone(),
            changes,
        ));
        Ok(Some(receiver))
    }

    async fn last_sequences(&self, job_ids: &[String]) -> Result<Vec<(String, u64)>, Error> {
        let rows = sqlx::query("SELECT id, last_sequence FROM jobs WHERE id = ANY($1)")
            .bind(job_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id").map_err(db_err)?,
                    count(row, "last_sequence")?,
                ))
            })
            .collect()
    }

    async fn claim_leases(&self, holder: &str, ttl: Duration) -> Result<Vec<String>, Error> {
        // One statement. Why two replicas never both hold one lease: an INSERT that meets
        // an existing lease row (or one being inserted) waits for the writer that holds it,
        // then ON CONFLICT DO UPDATE locks the row and evaluates its WHERE against the
        // committed version. A lease another holder renewed or took meanwhile is neither
        // ours nor lapsed there, so it is left alone and not returned. Rows are taken in
        // job id order by every claimer, so concurrent claims cannot deadlock; the leases
        // of finished jobs are dropped with SKIP LOCKED (a concurrent claim is dropping
        // them already). Time is the database's, whatever the replicas' clocks say.
        let held: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "WITH dropped AS (
                 DELETE FROM job_leases WHERE job_id IN (
                     SELECT l.job_id FROM job_leases l JOIN jobs j ON j.id = l.job_id
                     WHERE j.state IN {FINISHED}
                     FOR UPDATE OF l SKIP LOCKED)
             ),
             claimed AS (
                 INSERT INTO job_leases (job_id, holder, expires_at)
                 SELECT j.id, $1, {NOW_MS} + $2 FROM jobs j
                 WHERE j.state NOT IN {FINISHED}
                   AND (j.upstream_id IS NOT NULL
                        OR j.id IN (SELECT job_id FROM job_leases WHERE holder = $1))
                 ORDER BY j.id
                 {TAKE_LEASE}
             )
             SELECT job_id FROM claimed ORDER BY job_id"
        )))
        .bind(holder)
        .bind(millis(ttl))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(held)
    }

    async fn claim_lease(&self, job_id: &str, holder: &str, ttl: Duration) -> Result<bool, Error> {
        // As in claim_leases: the conflict's WHERE is evaluated on the committed lease row.
        let claimed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO job_leases (job_id, holder, expires_at)
             SELECT id, $2, {NOW_MS} + $3 FROM jobs WHERE id = $1 AND state NOT IN {FINISHED}
             {TAKE_LEASE}"
        )))
        .bind(job_id)
        .bind(holder)
        .bind(millis(ttl))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(claimed.is_some())
    }

    async fn release_leases(&self, holder: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM job_leases WHERE holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_err)
    }
}

/// Dataset bytes in the database, for every replica (`datasets`, `dataset_chunks`).
#[async_trait::async_trait]
impl SharedDatasets for PgStore {
    async fn save_dataset(&self, sha256: &str, path: &Path) -> Result<(), Error> {
        let saved: Option<i64> =
            sqlx::query_scalar("SELECT chunks FROM datasets WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        if saved.is_some() {
            return Ok(());
        }
        let io = |e: std::io::Error| Error::Io(format!("cannot read dataset {sha256}: {e}"));
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let size = file.metadata().await.map_err(io)?.len();
        let chunks = size.div_ceil(DATASET_CHUNK as u64);
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // The header first: a replica saving the same dataset at the same time waits here
        // for this transaction, then finds it saved (or, if this one failed, saves it).
        let claimed = sqlx::query(
            "INSERT INTO datasets (sha256, size_bytes, chunks, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(size as i64)
        .bind(chunks as i64)
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if claimed.rows_affected() == 0 {
            return tx.rollback().await.map_err(db_err);
        }
        let mut buffer = vec![0; DATASET_CHUNK];
        for chunk in 0..chunks {
            let expected = DATASET_CHUNK.min((size - chunk * DATASET_CHUNK as u64) as usize);
            file.read_exact(&mut buffer[..expected]).await.map_err(io)?;
            sqlx::query("INSERT INTO dataset_chunks (sha256, chunk, bytes) VALUES ($1, $2, $3)")
                .bind(sha256)
                .bind(chunk as i64)
                .bind(&buffer[..expected])
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn load_dataset(&self, sha256: &str, dest: &Path) -> Result<bool, Error> {
        let header = sqlx::query("SELECT size_bytes, chunks FROM datasets WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        let Some(header) = header else {
            return Ok(false);
        };
        let size: i64 = header.try_get("size_bytes").map_err(db_err)?;
        let chunks: i64 = header.try_get("chunks").map_err(db_err)?;
        let io = |e: std::io::Error| {
            Error::Io(format!(
                "cannot write dataset {sha256} to {}: {e}",
                dest.display()
            ))
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut written = 0;
        // One chunk in memory at a time. Saved rows never change (the id is their hash).
        for chunk in 0..chunks {
            let bytes: Vec<u8> = sqlx::query_scalar(
                "SELECT bytes FROM dataset_chunks WHERE sha256 = $1 AND chunk = $2",
            )
            .bind(sha256)
            .bind(chunk)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
            file.write_all(&bytes).await.map_err(io)?;
            written += bytes.len() as i64;
        }
        if written != size {
            return Err(Error::Io(format!(
                "job store: dataset {sha256} is {written} bytes in the database, not {size}"
            )));
        }
        file.sync_all().await.map_err(io)?;
        Ok(true)
    }
}

/// A listener on [`CHANNEL`], on a connection of its own (outside the store's pool, whose
/// connections come and go).
async fn subscribe(
    options: &PgConnectOptions,
    settings: &PoolSettings,
) -> Result<PgListener, Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool)
        .await
        .map_err(connect_err(options))?;
    listener.listen(CHANNEL).await.map_err(db_err)?;
    Ok(listener)
}

/// Turns the notices of other processes into [`Change`]s until the receiver is dropped.
/// A lost connection is a [`Change::Lagged`] once listening again: the notices in between
/// are gone, and the reader reads the store again.
async fn forward_changes(
    mut listener: PgListener,
    options: Arc<PgConnectOptions>,
    settings: PoolSettings,
    origin: Arc<str>,
    changes: mpsc::Sender<Change>,
) {
    let mut relay = Relay {
        changes,
        lagged: false,
    };
    loop {
        let received = tokio::select! {
            () = relay.changes.closed() => return,
            received = listener.try_recv() => received,
        };
        let change = match received {
            Ok(Some(notification)) => match notice::parse(notification.payload()) {
                Ok((from, _)) if from == &*origin => continue,
                Ok((_, change)) => change,
                Err(why) => {
                    tracing::warn!(payload = notification.payload(), %why, "skipped a malformed change notice");
                    continue;
                }
            },
            // The connection was lost and sqlx has listened again on a new one.
            Ok(None) => Change::Lagged,
            Err(e) => {
                tracing::warn!(error = %e, "lost the job store's change feed; listening again");
                let Some(again) = resubscribe(&options, &settings, &relay.changes).await else {
                    return;
                };
                listener = again;
                Change::Lagged
            }
        };
        if !relay.pass(change) {
            return;
        }
    }
}

/// Passes changes on without ever waiting for the reader: waiting would leave the notices
/// queued in PostgreSQL, whose one notification queue, once full, fails every writer's
/// commit on every replica. A change that finds the buffer full is dropped, and the reader
/// is told [`Change::Lagged`] before the next change that finds room.
#[derive(Debug)]
struct Relay {
    changes: mpsc::Sender<Change>,
    lagged: bool,
}

impl Relay {
    /// Passes `change` on (or drops it, as above); false once the reader is gone.
    fn pass(&mut self, change: Change) -> bool {
        use mpsc::error::TrySendError;
        if self.lagged {
            match self.changes.try_send(Change::Lagged) {
                Ok(()) => self.lagged = false,
                Err(TrySendError::Full(_)) => return true,
                Err(TrySendError::Closed(_)) => return false,
            }
            if change == Change::Lagged {
                return true;
            }
        }
        match self.changes.try_send(change) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.lagged = true;
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// A new listener once the database answers again (None when the receiver went away
/// meanwhile); retries with a growing pause, up to 30 s.
async fn resubscribe(
    options: &PgConnectOptions,
    settings: &PoolSettings,
    changes: &mpsc::Sender<Change>,
) -> Option<PgListener> {
    let mut pause = Duration::from_millis(100);
    loop {
        tokio::select! {
            () = changes.closed() => return None,
            () = tokio::time::sleep(pause) => {}
        }
        match subscribe(options, settings).await {
            Ok(listener) => return Some(listener),
            Err(e) => tracing::warn!(error = %e, "the job store's change feed is still down"),
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(last_sequence: u64) -> Change {
        Change::Job {
            job_id: "job-1".to_owned(),
            last_sequence,
        }
    }

    #[test]
    fn a_reader_that_falls_behind_is_told_it_lagged() {
        let (changes, mut reader) = mpsc::channel(2);
        let mut relay = Relay {
            changes,
            lagged: false,
        };
        // 3 and 4 find the buffer full and are dropped.
        for sequence in 1..=4 {
            assert!(relay.pass(job(sequence)));
        }
        assert_eq!(reader.try_recv().ok(), Some(job(1)));
        assert_eq!(reader.try_recv().ok(), Some(job(2)));
        assert!(reader.try_recv().is_err(), "nothing until the next change");
        // The next change comes after the news of the loss.
        assert!(relay.pass(job(5)));
        assert_eq!(reader.try_recv().ok(), Some(Change::Lagged));
        assert_eq!(reader.try_recv().ok(), Some(job(5)));
        // A lag told while one is pending is told once.
        for sequence in 6..=9 {
            assert!(relay.pass(job(sequence)));
        }
        reader.try_recv().unwrap();
        reader.try_recv().unwrap();
        assert!(relay.pass(Change::Lagged));
        assert_eq!(reader.try_recv().ok(), Some(Change::Lagged));
        assert!(reader.try_recv().is_err());
        // The reader gone, the relay stops.
        drop(reader);
        assert!(!relay.pass(job(10)));
    }
}
