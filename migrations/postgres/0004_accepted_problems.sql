-- Problems a caller accepted when starting a job (StartTrainingRequest.accepted_problems),
-- one row each, written with the job's reservation and removed with it.

CREATE TABLE job_accepted_problems (
    job_id TEXT COLLATE "C" NOT NULL REFERENCES jobs (id),
    dataset TEXT COLLATE "C" NOT NULL,
    line BIGINT NOT NULL,
    code TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (job_id, dataset, line, code)
);

CREATE INDEX job_accepted_problems_by_code ON job_accepted_problems (code, job_id);
