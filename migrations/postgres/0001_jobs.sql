-- Jobs started or adopted through the service, their event logs, and uploaded files: the
-- same tables and columns as migrations/sqlite, so both adapters read alike.
-- Text keys are COLLATE "C" (byte order, as SQLite's BINARY): list pages, their cursors and
-- every ORDER BY then come out in the same order on both engines, whatever the database's
-- locale.
-- A job's full snapshot is JSON in `snapshot` (TEXT: it is only ever read back whole); the
-- columns beside it are what we look up by.

CREATE TABLE jobs (
    id TEXT COLLATE "C" PRIMARY KEY,
    request_id TEXT COLLATE "C" UNIQUE,
    request_fingerprint TEXT,
    upstream_id TEXT COLLATE "C" UNIQUE,
    state TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    last_sequence BIGINT NOT NULL DEFAULT 0,
    snapshot TEXT NOT NULL
);

CREATE INDEX jobs_by_created ON jobs (created_at, id);

CREATE TABLE job_events (
    job_id TEXT COLLATE "C" NOT NULL REFERENCES jobs (id),
    sequence BIGINT NOT NULL,
    upstream_id TEXT COLLATE "C",
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
);

CREATE UNIQUE INDEX job_events_by_upstream ON job_events (job_id, upstream_id);

CREATE TABLE uploaded_files (
    sha256 TEXT COLLATE "C" PRIMARY KEY,
    file_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
