-- Rating deviations (Glicko style) per pool, as a JSON object
-- `{"blitz_standard": 80, …}`; NULL for none (a pool without one reads as
-- 350, a provisional player). Merged key by key like variant_ratings.
ALTER TABLE players ADD COLUMN rating_deviations TEXT;
