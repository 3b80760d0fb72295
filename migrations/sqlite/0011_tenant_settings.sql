-- A tenant's configuration (kind 'config': time controls, variants,
-- regions, default region) and feature flags (kind 'flags'), set at run
-- time through /internal/tenants/{tenant_id}/config and .../flags: only
-- the fields set, as a JSON object; a field not set comes from the
-- settings. Changes move the same version counter as the policies.
CREATE TABLE tenant_settings (
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    body        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, kind)
);
