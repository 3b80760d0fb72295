-- Matching policies set at run time (GET/PUT/DELETE /internal/policies):
-- per tenant (pool_key '') or per pool, only the fields set, as a JSON
-- object; a field not set comes from the tenant's row, then the settings.
CREATE TABLE pool_policies (
    tenant_id   TEXT NOT NULL,
    pool_key    TEXT NOT NULL,
    policy      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, pool_key)
);

-- One counter per kind of run-time configuration, moved by every change:
-- nodes compare it with the version they hold to know when to reload.
CREATE TABLE config_versions (
    name     TEXT PRIMARY KEY,
    version  BIGINT NOT NULL
);
INSERT INTO config_versions (name, version) VALUES ('policies', 0);
