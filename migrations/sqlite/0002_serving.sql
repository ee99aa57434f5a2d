-- Serving: the model promoted to each tier, and every served request (for A/B statistics,
-- cost reports and feedback).

CREATE TABLE tier_models (
    tier TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    job_id TEXT,
    updated_at BIGINT NOT NULL
);

CREATE TABLE served (
    id TEXT PRIMARY KEY,
    tier TEXT NOT NULL,
    split TEXT NOT NULL,
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
