-- Problems a caller accepted when starting a job (StartTrainingRequest.accepted_problems),
-- one row each, written with the job's reservation and removed with it. The job snapshot
-- carries them too (GetJob reads the snapshot); this table is for looking up which jobs
-- were trained past a check, for example every job with an accepted possible_secret.

CREATE TABLE job_accepted_problems (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    dataset TEXT NOT NULL,
    line BIGINT NOT NULL,
    code TEXT NOT NULL,
    PRIMARY KEY (job_id, dataset, line, code)
);

CREATE INDEX job_accepted_problems_by_code ON job_accepted_problems (code, job_id);
