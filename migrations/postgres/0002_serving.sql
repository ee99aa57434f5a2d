-- Serving: the model promoted to each tier, and every served request (for A/B statistics,
-- cost reports and feedback). `ok`, `fallback` and `rating` are BIGINT as in SQLite.

CREATE TABLE tier_models (
    tier TEXT COLLATE "C" PRIMARY KEY,
    model TEXT NOT NULL,
    job_id TEXT,
    updated_at BIGINT NOT NULL
);

CREATE TABLE served (
    id TEXT COLLATE "C" PRIMARY KEY,
    tier TEXT COLLATE "C" NOT NULL,
    split TEXT COLLATE "C" NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    ok BIGINT NOT NULL,
    error_code TEXT,
    fallback BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    knowledge_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    rating BIGINT,
    created_at BIGINT NOT NULL
);

CREATE INDEX served_by_tier ON served (tier, split);
