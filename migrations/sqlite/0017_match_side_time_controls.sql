-- The time control of the pool a side's entry waited in, when it is not
-- the match's own (an entry waiting in several time controls at once,
-- matched in another of them); NULL: the match's.
ALTER TABLE match_records ADD COLUMN white_time_control TEXT;
ALTER TABLE match_records ADD COLUMN black_time_control TEXT;
ALTER TABLE match_intents ADD COLUMN white_time_control TEXT;
ALTER TABLE match_intents ADD COLUMN black_time_control TEXT;
