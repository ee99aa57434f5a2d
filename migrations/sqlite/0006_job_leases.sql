-- Polling leases: a process polls a job only while it holds the job's lease here (issue 14),
-- so each active job has one poller however many processes share the store. `expires_at` is
-- unix milliseconds; a lease lapses then unless its holder renews it.
CREATE TABLE job_leases (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id),
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX job_leases_by_holder ON job_leases (holder);
