-- A write counter per job, for compare-and-set: a writer names the version it read and the
-- write is a conditional UPDATE ... WHERE version = ?, refused when another write came first.
-- Existing snapshots have no version field, which reads as 0, like the column's default.
ALTER TABLE jobs ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
