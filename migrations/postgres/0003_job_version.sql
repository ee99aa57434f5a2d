-- A write counter per job, for compare-and-set: a writer names the version it read and the
-- write is a conditional UPDATE ... WHERE version = $n, refused when another write came first.
ALTER TABLE jobs ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
