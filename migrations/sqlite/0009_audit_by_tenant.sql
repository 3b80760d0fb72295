-- The audit log read per tenant, newest first (GET /internal/audit).
CREATE INDEX audit_events_tenant ON audit_events (tenant_id, id);
