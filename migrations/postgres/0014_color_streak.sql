-- A player's current run of one colour: +n, the last n games white; -n,
-- black. Moved with color_balance by every match recorded.
ALTER TABLE players ADD COLUMN color_streak INTEGER NOT NULL DEFAULT 0;
