-- Durable records in production. Times are epoch milliseconds (BIGINT).

CREATE TABLE match_records (
    match_id        TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    game_id         TEXT NOT NULL,
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
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT
);

CREATE UNIQUE INDEX match_records_game ON match_records (tenant_id, game_id);
CREATE INDEX match_records_white_entry ON match_records (white_entry_id);
CREATE INDEX match_records_black_entry ON match_records (black_entry_id);
CREATE INDEX match_records_white_user ON match_records (tenant_id, white_user_id, created_at);
CREATE INDEX match_records_black_user ON match_records (tenant_id, black_user_id, created_at);
CREATE INDEX match_records_unfinished ON match_records (created_at) WHERE finished_at IS NULL;

-- Ratings per speed (NULL = never set, read as 1500) and color balance
-- (whites - blacks) of every player who has either.
CREATE TABLE players (
    tenant_id      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    bullet         INTEGER,
    blitz          INTEGER,
    rapid          INTEGER,
    classical      INTEGER,
    color_balance  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE audit_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    tenant_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    detail     TEXT NOT NULL
);

CREATE INDEX audit_events_subject ON audit_events (subject, id);
