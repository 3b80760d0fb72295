-- Ratings per variant (SPEC §8: `blitz_chess960`, …). The four speed
-- columns stay the standard variant's; the other variants a player is
-- rated in are a JSON object `{"blitz_chess960": 2100, …}`, NULL for none
-- (most players), so a row costs nothing more until it needs to.
ALTER TABLE players ADD COLUMN variant_ratings TEXT;
