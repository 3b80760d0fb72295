-- Direct challenges. Every state change is a conditional UPDATE on
-- `status`: the row lock makes racing transitions have one winner.

CREATE TABLE challenges (
    challenge_id     TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    challenger_id    TEXT NOT NULL,
    opponent_id      TEXT NOT NULL,
    time_control     TEXT NOT NULL,
    mode             TEXT NOT NULL,
    variant          TEXT NOT NULL,
    preferred_color  TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    match_id         TEXT,
    game_id          TEXT
);

CREATE INDEX challenges_outgoing ON challenges (tenant_id, challenger_id, status);
CREATE INDEX challenges_incoming ON challenges (tenant_id, opponent_id, status);
CREATE INDEX challenges_open ON challenges (status, expires_at) WHERE status IN ('PENDING', 'ACCEPTING');
