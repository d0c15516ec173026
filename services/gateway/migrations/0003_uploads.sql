-- Uploads through a presigned S3 PUT URL (CreateUploadUrl, then RegisterUpload).
--
-- Kept in Postgres, not Valkey: registering must be answered the same on every retry (the
-- image_id it made), scoped to its tenant, and it must not vanish while a client still holds
-- its URL, which a cache evicting under memory pressure cannot promise. The rows are few (one
-- per upload, deleted a grace period after their URL expired, a bounded batch at a time, by
-- the gateway itself: see GatewayService.clean_expired_uploads).
CREATE TABLE gateway.uploads (
    upload_id  text PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES gateway.tenants (tenant_id),
    filename   text NOT NULL DEFAULT '',
    size_bytes bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    -- Set once registered: a retried RegisterUpload returns this image.
    image_id   text REFERENCES gateway.images (image_id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX uploads_expires_at ON gateway.uploads (expires_at);
