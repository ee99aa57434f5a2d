-- Polling leases: a replica polls a job only while it holds the job's lease here (issue 14),
-- so each active job has one poller however many replicas share the database. `expires_at`
-- is unix milliseconds on the DATABASE's clock (the adapter computes it from now()), so
-- replicas whose clocks disagree still agree on who holds a lease.
CREATE TABLE job_leases (
    job_id TEXT COLLATE "C" PRIMARY KEY REFERENCES jobs (id),
    holder TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX job_leases_by_holder ON job_leases (holder);
