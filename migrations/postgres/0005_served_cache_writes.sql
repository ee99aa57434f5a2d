-- Prompt tokens written to the provider's cache per served request.
ALTER TABLE served ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
