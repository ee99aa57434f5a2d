-- Uploaded dataset bytes, so that a dataset uploaded through one replica can be validated
-- and trained through any other (issue 14). PostgreSQL only: a SQLite file has one process,
-- which keeps its datasets in its data directory.
-- Chunked rows rather than large objects: plain rows go wherever the database goes (dumps,
-- replicas, managed services that restrict large objects), and a chunk is read and written
-- without holding a whole dataset in memory. A dataset's header and its chunks are written
-- in one transaction, so a reader finds either all of a dataset or none of it.

CREATE TABLE datasets (
    sha256 TEXT COLLATE "C" PRIMARY KEY,
    size_bytes BIGINT NOT NULL,
    chunks BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE dataset_chunks (
    sha256 TEXT COLLATE "C" NOT NULL REFERENCES datasets (sha256),
    chunk BIGINT NOT NULL,
    bytes BYTEA NOT NULL,
    PRIMARY KEY (sha256, chunk)
);
