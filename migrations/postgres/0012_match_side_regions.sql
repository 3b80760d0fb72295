-- The region of the pool a side's entry waited in, when it is not the
-- match's own (region fallback); NULL: the match's pool.
ALTER TABLE match_records ADD COLUMN white_region TEXT;
ALTER TABLE match_records ADD COLUMN black_region TEXT;
ALTER TABLE match_intents ADD COLUMN white_region TEXT;
ALTER TABLE match_intents ADD COLUMN black_region TEXT;
