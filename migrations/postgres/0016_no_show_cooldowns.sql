-- A game aborted because a player never moved: who, and until when they
-- may not join (the no-show cooldown). Kept with the match so a queue
-- store that lost its data gets the cooldown back with the guards.
ALTER TABLE match_records ADD COLUMN no_show_user_id TEXT;
ALTER TABLE match_records ADD COLUMN cooldown_until BIGINT;
CREATE INDEX match_records_cooldown ON match_records (cooldown_until)
    WHERE cooldown_until IS NOT NULL;
