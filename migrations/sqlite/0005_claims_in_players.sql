-- A player's claim lives in their `players` row, beside the color balance
-- every match already updates: one row write per player per match instead
-- of two rows on two randomly ordered B-trees (each a page in the WAL).
-- Claims are lifted by (tenant, player, match); the purge of lapsed claims
-- scans the table (every 30 worker ticks).
ALTER TABLE players ADD COLUMN active_match_id TEXT;
ALTER TABLE players ADD COLUMN active_since INTEGER;
INSERT INTO players (tenant_id, user_id, active_match_id, active_since)
    SELECT tenant_id, user_id, match_id, since FROM active_players WHERE true
    ON CONFLICT (tenant_id, user_id) DO UPDATE
    SET active_match_id = excluded.active_match_id, active_since = excluded.active_since;
DROP TABLE active_players;
