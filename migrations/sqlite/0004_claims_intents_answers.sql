-- The durable store becomes the authority for "this player is in a game".
-- Times are epoch milliseconds.

-- Each player's one unfinished match. Written in the same transaction as
-- the match's intent or record, deleted when its game finishes; a claim
-- older than the active-game guard time has lapsed.
CREATE TABLE active_players (
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    match_id   TEXT NOT NULL,
    since      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX active_players_match ON active_players (match_id);
CREATE INDEX active_players_since ON active_players (since);

-- Matches decided whose game is being created (written before the game
-- service is called). `owner` is the attempt working on it until
-- `attempt_until` (the database's clock); past it, a recoverer takes over.
CREATE TABLE match_intents (
    match_id        TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    white_user_id   TEXT NOT NULL,
    white_username  TEXT,
    white_rating    INTEGER NOT NULL,
    white_entry_id  TEXT,
    black_user_id   TEXT NOT NULL,
    black_username  TEXT,
    black_rating    INTEGER NOT NULL,
    black_entry_id  TEXT,
    pool_key        TEXT NOT NULL,
    source          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    owner           TEXT NOT NULL,
    attempt_until   INTEGER NOT NULL
);
CREATE INDEX match_intents_attempt ON match_intents (attempt_until);

-- First answers to requests with an Idempotency-Key, per user.
CREATE TABLE idempotent_answers (
    tenant_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    key         TEXT NOT NULL,
    status      INTEGER NOT NULL,
    body        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id, key)
);
CREATE INDEX idempotent_answers_expiry ON idempotent_answers (expires_at);

-- One row the writer rewrites to learn whether the disk takes writes again.
CREATE TABLE write_probe (
    id  INTEGER PRIMARY KEY,
    at  INTEGER NOT NULL
);

-- Unfinished matches recorded before this migration claim their players
-- (the newest match of a player wins).
INSERT OR REPLACE INTO active_players (tenant_id, user_id, match_id, since)
    SELECT tenant_id, user_id, match_id, created_at FROM (
        SELECT tenant_id, white_user_id AS user_id, match_id, created_at
            FROM match_records WHERE finished_at IS NULL
        UNION ALL
        SELECT tenant_id, black_user_id, match_id, created_at
            FROM match_records WHERE finished_at IS NULL
    ) ORDER BY created_at;
