-- Matches recovery rolled back before anything of them was stored: a
-- worker whose reservation went stale before it wrote the intent (or the
-- record) must not write it afterwards, since the players are back in the
-- queue and may be in another match by then. The row is written under the
-- same lock (PostgreSQL: the tenant's claims lock; SQLite: the single
-- writer) as claims and records, so exactly one of "withdrawn" and
-- "stored" wins. Purged with lapsed claims. Times are epoch milliseconds.
CREATE TABLE withdrawn_matches (
    match_id      TEXT PRIMARY KEY,
    withdrawn_at  INTEGER NOT NULL
);
CREATE INDEX withdrawn_matches_at ON withdrawn_matches (withdrawn_at);
