-- Deletion and retention (issue 15).
-- Who else has a source's bytes (any tenant): an image is deleted with its object only when no
-- other image row has the same sha256.
CREATE INDEX images_sha256_idx ON gateway.images (sha256);
-- Per-tenant retention, seconds; NULL: kept until deleted. Outputs: finished jobs (and their
-- outputs) after this long; sources: images (with their jobs, outputs and metadata).
ALTER TABLE gateway.tenants
    ADD COLUMN retain_outputs_s bigint CHECK (retain_outputs_s > 0),
    ADD COLUMN retain_sources_s bigint CHECK (retain_sources_s > 0);
CREATE INDEX images_tenant_created_idx ON gateway.images (tenant_id, created_at);
