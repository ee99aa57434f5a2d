-- Prompt tokens written to the provider's cache per served request: `finetune cost` explains a
-- tier's price by them (rows from before this column count none).
ALTER TABLE served ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
