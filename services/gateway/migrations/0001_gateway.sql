-- Tenants, their API keys (only a sha256 of each key is stored) and uploaded images.
CREATE TABLE gateway.tenants (
    tenant_id  text PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gateway.api_keys (
    key_id     text PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES gateway.tenants (tenant_id),
    key_sha256 text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE gateway.images (
    image_id     text PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES gateway.tenants (tenant_id),
    sha256       text NOT NULL,
    format       int  NOT NULL,
    width        int  NOT NULL,
    height       int  NOT NULL,
    frame_count  int  NOT NULL,
    size_bytes   bigint NOT NULL,
    content_type text NOT NULL,
    filename     text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- The same bytes uploaded twice by a tenant are the same image.
    UNIQUE (tenant_id, sha256)
);
