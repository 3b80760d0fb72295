-- Who blocks whom (PUT/DELETE /internal/blocks/{tenant}/{user}/{blocked}):
-- two players are never paired when either blocks the other. Read by the
-- matching pass for the players of the pairs it found, by blocker.
CREATE TABLE player_blocks (
    tenant_id        TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    blocked_user_id  TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, blocked_user_id)
);

-- Players restricted for fair play (PUT/DELETE /internal/restricted/...):
-- paired only with each other. Run-time configuration: a change moves the
-- configuration version, and every node holds the set (body: a JSON object,
-- the optional reason).
CREATE TABLE restricted_players (
    tenant_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    body        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
