-- When a player's ratings last changed (epoch milliseconds, the database's
-- own clock). API nodes keep the ratings in memory and re-read only the rows
-- changed since their last look, so a join reads no row.
ALTER TABLE players ADD COLUMN ratings_changed_at INTEGER;
UPDATE players SET ratings_changed_at = 0
    WHERE bullet IS NOT NULL OR blitz IS NOT NULL OR rapid IS NOT NULL OR classical IS NOT NULL;
CREATE INDEX players_ratings_changed ON players (ratings_changed_at)
    WHERE ratings_changed_at IS NOT NULL;
