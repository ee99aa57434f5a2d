//! The job store in an embedded SQLite file (WAL, one transaction per write).

#![warn(missing_docs)]

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use finetune_core::domain::job::{Job, JobEvent, JobState, NewEvent, now_millis};
use finetune_core::domain::served::{Served, TierStats, percentile};
use finetune_core::error::{Error, Missing};
use finetune_core::store::{Change, JobPage, Recorded, Reservation, Store, check_write};

/// The core's [`Store`] in one SQLite file; cheap to clone (clones share the pool).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn db_err(e: sqlx::Error) -> Error {
    Error::Io(format!("job store: {e}"))
}

fn json_err(e: serde_json::Error) -> Error {
    Error::Io(format!("job store: corrupt record: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) `path` and applies the migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, Error> {
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(db_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| Error::Io(format!("cannot open the job store {}: {e}", path.display())))?;
        let migrator = sqlx::migrate!("../../migrations/sqlite");
        refuse_newer_schema(&pool, &migrator).await?;
        migrator
            .run(&pool)
            .await
            .map_err(|e| Error::Io(format!("job store migration failed: {e}")))?;
        Ok(SqliteStore { pool })
    }
}

/// Refuses a database migrated by a newer build: this one would misread what it does not
/// know (sqlx would refuse too, naming only the missing migration).
async fn refuse_newer_schema(
    pool: &SqlitePool,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), Error> {
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match applied {
        Some(applied) if applied > known => Err(Error::Io(format!(
            "the job store's schema is at version {applied}, newer than this build knows \
             ({known}): run the finetune release that migrated it, or a newer one"
        ))),
        _ => Ok(()),
    }
}

impl SqliteStore {
    /// A transaction that takes the write lock up front (`BEGIN IMMEDIATE`). A deferred
    /// transaction that reads and then writes fails at once with SQLITE_BUSY when another
    /// connection wrote in between; an immediate one waits its turn (busy_timeout).
    async fn write_transaction(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, Error> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)
    }
}

fn decode_job(row: &sqlx::sqlite::SqliteRow) -> Result<Job, Error> {
    let snapshot: String = row.try_get("snapshot").map_err(db_err)?;
    serde_json::from_str(&snapshot).map_err(json_err)
}

fn state_text(job: &Job) -> &'static str {
    job.state.as_str()
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn reserve(&self, job: &Job, fingerprint: &str) -> Result<Reservation, Error> {
        let snapshot = serde_json::to_string(job).map_err(json_err)?;
        let mut tx = self.write_transaction().await?;
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, request_id, request_fingerprint, upstream_id, state, created_at, last_sequence, snapshot)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(&job.id)
        .bind(&job.request_id)
        .bind(fingerprint)
        .bind(&job.upstream_id)
        .bind(state_text(job))
        .bind(job.created_at)
        .bind(job.last_sequence as i64)
        .bind(snapshot)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if inserted.rows_affected() == 1 {
            for accepted in &job.accepted_problems {
                sqlx::query(
                    "INSERT INTO job_accepted_problems (job_id, dataset, line, code) VALUES (?, ?, ?, ?)",
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
        drop(tx);
        let row =
            sqlx::query("SELECT snapshot, request_fingerprint FROM jobs WHERE request_id = ?")
                .bind(&job.request_id)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
        let fingerprint: Option<String> = row.try_get("request_fingerprint").map_err(db_err)?;
        Ok(Reservation::Existing(
            Box::new(decode_job(&row)?),
            fingerprint.unwrap_or_default(),
        ))
    }

    async fn adopt(&self, job: &Job) -> Result<Job, Error> {
        let snapshot = serde_json::to_string(job).map_err(json_err)?;
        sqlx::query(
            "INSERT INTO jobs (id, request_id, request_fingerprint, upstream_id, state, created_at, last_sequence, snapshot)
             VALUES (?, NULL, NULL, ?, ?, ?, ?, ?) ON CONFLICT (upstream_id) DO NOTHING",
        )
        .bind(&job.id)
        .bind(&job.upstream_id)
        .bind(state_text(job))
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
        let mut tx = self.write_transaction().await?;
        sqlx::query("DELETE FROM job_accepted_problems WHERE job_id = ?")
            .bind(job_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM job_leases WHERE job_id = ?")
            .bind(job_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM job_events WHERE job_id = ?")
            .bind(job_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM jobs WHERE id = ?")
            .bind(job_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn get(&self, id: &str) -> Result<Option<Job>, Error> {
        let row = sqlx::query("SELECT snapshot FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(decode_job).transpose()
    }

    async fn get_by_request(&self, request_id: &str) -> Result<Option<(Job, String)>, Error> {
        let row =
            sqlx::query("SELECT snapshot, request_fingerprint FROM jobs WHERE request_id = ?")
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
        let row = sqlx::query("SELECT snapshot FROM jobs WHERE upstream_id = ?")
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
        let state_filter = state.map(|s| s.as_str());
        let rows = sqlx::query(
            "SELECT snapshot, created_at, id FROM jobs
             WHERE (created_at < ? OR (created_at = ? AND id < ?) OR ? = 1)
               AND (? IS NULL OR state = ?)
             ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(before_time)
        .bind(before_time)
        .bind(&before_id)
        .bind(i64::from(cursor.is_none()))
        .bind(state_filter)
        .bind(state_filter)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let jobs = rows.iter().map(decode_job).collect::<Result<Vec<_>, _>>()?;
        Ok(JobPage::of(jobs, limit))
    }

    async fn unfinished(&self) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(
            "SELECT snapshot FROM jobs WHERE state NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(decode_job).collect()
    }

    async fn creating(&self) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(
            "SELECT snapshot FROM jobs WHERE upstream_id IS NULL AND state NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(decode_job).collect()
    }

    async fn count_by_state(&self) -> Result<Vec<(String, u64)>, Error> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state").map_err(db_err)?;
                let n: i64 = row.try_get("n").map_err(db_err)?;
                Ok((state, u64::try_from(n).unwrap_or_default()))
            })
            .collect()
    }

    async fn record(
        &self,
        job: &Job,
        read_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Recorded, Error> {
        let mut tx = self.write_transaction().await?;
        // The compare-and-set: claim the row only at the version the writer read and only
        // while the job is unfinished. Nothing else is written unless this matched.
        let claimed = sqlx::query(
            "UPDATE jobs SET version = version + 1
             WHERE id = ? AND version = ? AND state NOT IN ('succeeded', 'failed', 'cancelled')
             RETURNING last_sequence",
        )
        .bind(&job.id)
        .bind(read_version as i64)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(claimed) = claimed else {
            let current = sqlx::query("SELECT snapshot FROM jobs WHERE id = ?")
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
        let mut last = claimed.try_get::<i64, _>("last_sequence").map_err(db_err)? as u64;
        let mut saved = job.clone();
        saved.version = read_version + 1;
        let mut appended = Vec::with_capacity(events.len());
        for mut event in events {
            if let Some(upstream_id) = &event.upstream_id {
                let seen =
                    sqlx::query("SELECT 1 FROM job_events WHERE job_id = ? AND upstream_id = ?")
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
                "INSERT INTO job_events (job_id, sequence, upstream_id, body) VALUES (?, ?, ?, ?)",
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
        sqlx::query("UPDATE jobs SET upstream_id = ?, state = ?, last_sequence = ?, snapshot = ? WHERE id = ?")
            .bind(&saved.upstream_id)
            .bind(state_text(&saved))
            .bind(last as i64)
            .bind(snapshot)
            .bind(&saved.id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Recorded::Saved(saved, appended))
    }

    async fn events_after(
        &self,
        job_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JobEvent>, Error> {
        let rows = sqlx::query("SELECT body FROM job_events WHERE job_id = ? AND sequence > ? ORDER BY sequence LIMIT ?")
            .bind(job_id)
            .bind(after as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let body: String = row.try_get("body").map_err(db_err)?;
                serde_json::from_str(&body).map_err(json_err)
            })
            .collect()
    }

    async fn uploaded_file(&self, sha256: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT file_id FROM uploaded_files WHERE sha256 = ?")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| r.try_get("file_id").map_err(db_err))
            .transpose()
    }

    async fn remember_upload(&self, sha256: &str, file_id: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO uploaded_files (sha256, file_id, created_at) VALUES (?, ?, ?)
             ON CONFLICT (sha256) DO UPDATE SET file_id = excluded.file_id",
        )
        .bind(sha256)
        .bind(file_id)
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn set_tier_model(
        &self,
        tier: &str,
        model: &str,
        job_id: Option<&str>,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO tier_models (tier, model, job_id, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (tier) DO UPDATE SET model = excluded.model, job_id = excluded.job_id,
             updated_at = excluded.updated_at",
        )
        .bind(tier)
        .bind(model)
        .bind(job_id)
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn tier_models(&self) -> Result<Vec<(String, String, Option<String>)>, Error> {
        let rows = sqlx::query("SELECT tier, model, job_id FROM tier_models")
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
        let mut tx = self.write_transaction().await?;
        for s in served {
            sqlx::query(
                "INSERT INTO served (id, tier, split, provider, model, ok, error_code, fallback, input_tokens,
                 output_tokens, cached_tokens, cache_write_tokens, knowledge_tokens, cost_usd, latency_ms, rating,
                 created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            )
            .bind(&s.id)
            .bind(&s.tier)
            .bind(&s.split)
            .bind(&s.provider)
            .bind(&s.model)
            .bind(i64::from(s.ok))
            .bind(&s.error_code)
            .bind(i64::from(s.fallback))
            .bind(s.input_tokens as i64)
            .bind(s.output_tokens as i64)
            .bind(s.cached_tokens as i64)
            .bind(s.cache_write_tokens as i64)
            .bind(s.knowledge_tokens as i64)
            .bind(s.cost_usd)
            .bind(s.latency_ms)
            .bind(s.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn rate(
        &self,
        response_id: &str,
        rating: i64,
    ) -> Result<Option<(String, String)>, Error> {
        let row = sqlx::query("UPDATE served SET rating = ? WHERE id = ? RETURNING tier, split")
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
        let rows = sqlx::query(
            "SELECT tier, split, model, ok, fallback, input_tokens, output_tokens, cached_tokens,
                    cache_write_tokens, knowledge_tokens, cost_usd, latency_ms, rating
             FROM served WHERE (? IS NULL OR tier = ? OR split = ?) ORDER BY tier, split, created_at",
        )
        .bind(tier)
        .bind(tier)
        .bind(tier)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let mut out: Vec<(TierStats, Vec<f64>)> = Vec::new();
        for r in &rows {
            let t: String = r.try_get("tier").map_err(db_err)?;
            let split: String = r.try_get("split").map_err(db_err)?;
            if out
                .last()
                .is_none_or(|(s, _)| s.tier != t || s.split != split)
            {
                out.push((
                    TierStats {
                        tier: t.clone(),
                        split: split.clone(),
                        ..TierStats::default()
                    },
                    Vec::new(),
                ));
            }
            let (s, latencies) = out.last_mut().expect("pushed");
            let get =
                |name: &str| -> Result<i64, Error> { r.try_get::<i64, _>(name).map_err(db_err) };
            s.model = r.try_get("model").map_err(db_err)?;
            s.requests += 1;
            if get("ok")? == 0 {
                s.errors += 1;
            } else {
                latencies.push(r.try_get("latency_ms").map_err(db_err)?);
            }
            s.fallbacks += u64::from(get("fallback")? != 0);
            s.input_tokens += get("input_tokens")? as u64;
            s.output_tokens += get("output_tokens")? as u64;
            s.cached_tokens += get("cached_tokens")? as u64;
            s.cache_write_tokens += get("cache_write_tokens")? as u64;
            s.knowledge_tokens += get("knowledge_tokens")? as u64;
            s.cost_usd += r.try_get::<f64, _>("cost_usd").map_err(db_err)?;
            match r.try_get::<Option<i64>, _>("rating").map_err(db_err)? {
                Some(1) => s.thumbs_up += 1,
                Some(-1) => s.thumbs_down += 1,
                _ => {}
            }
        }
        Ok(out
            .into_iter()
            .map(|(mut s, mut latencies)| {
                latencies.sort_by(f64::total_cmp);
                s.p50_ms = percentile(&latencies, 0.50);
                s.p95_ms = percentile(&latencies, 0.95);
                s.p99_ms = percentile(&latencies, 0.99);
                s
            })
            .collect())
    }

    fn is_shared(&self) -> bool {
        // One process per file.
        false
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_err)
    }

    async fn listen(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Change>>, Error> {
        // One process per file: its writers tell its watchers in process.
        Ok(None)
    }

    async fn last_sequences(&self, job_ids: &[String]) -> Result<Vec<(String, u64)>, Error> {
        // The ids go in as one JSON array: one statement, whatever their number.
        let ids = serde_json::to_string(job_ids).map_err(json_err)?;
        let rows = sqlx::query(
            "SELECT id, last_sequence FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id").map_err(db_err)?;
                let last: i64 = row.try_get("last_sequence").map_err(db_err)?;
                Ok((id, last as u64))
            })
            .collect()
    }

    async fn claim_leases(&self, holder: &str, ttl: Duration) -> Result<Vec<String>, Error> {
        let now = now_millis();
        let mut tx = self.write_transaction().await?;
        sqlx::query(
            "DELETE FROM job_leases WHERE job_id IN
             (SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled'))",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("UPDATE job_leases SET expires_at = ? WHERE holder = ?")
            .bind(now + millis(ttl))
            .bind(holder)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO job_leases (job_id, holder, expires_at)
             SELECT id, ?, ? FROM jobs
             WHERE upstream_id IS NOT NULL AND state NOT IN ('succeeded', 'failed', 'cancelled')
             ON CONFLICT (job_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE job_leases.holder = excluded.holder OR job_leases.expires_at < ?",
        )
        .bind(holder)
        .bind(now + millis(ttl))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let held: Vec<String> =
            sqlx::query_scalar("SELECT job_id FROM job_leases WHERE holder = ? ORDER BY job_id")
                .bind(holder)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(held)
    }

    async fn claim_lease(&self, job_id: &str, holder: &str, ttl: Duration) -> Result<bool, Error> {
        let now = now_millis();
        let claimed = sqlx::query(
            "INSERT INTO job_leases (job_id, holder, expires_at)
             SELECT id, ?, ? FROM jobs WHERE id = ? AND state NOT IN ('succeeded', 'failed', 'cancelled')
             ON CONFLICT (job_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE job_leases.holder = excluded.holder OR job_leases.expires_at < ?",
        )
        .bind(holder)
        .bind(now + millis(ttl))
        .bind(job_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(claimed.rows_affected() == 1)
    }

    async fn release_leases(&self, holder: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM job_leases WHERE holder = ?")
            .bind(holder)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db_err)
    }
}

/// A duration in whole milliseconds, as the lease columns hold time.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
