-- Jobs started or adopted through the service, their event logs, and uploaded files.
-- Portable SQL (SQLite now, PostgreSQL next): TEXT, BIGINT, no engine-specific types.
-- A job's full snapshot is JSON in `snapshot`; the columns beside it are what we look up by.

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    request_id TEXT UNIQUE,
    request_fingerprint TEXT,
    upstream_id TEXT UNIQUE,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_sequence BIGINT NOT NULL DEFAULT 0,
    snapshot TEXT NOT NULL
);

CREATE INDEX jobs_by_created ON jobs (created_at, id);

CREATE TABLE job_events (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    sequence BIGINT NOT NULL,
    upstream_id TEXT,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
);

CREATE UNIQUE INDEX job_events_by_upstream ON job_events (job_id, upstream_id);

CREATE TABLE uploaded_files (
    sha256 TEXT PRIMARY KEY,
    file_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
