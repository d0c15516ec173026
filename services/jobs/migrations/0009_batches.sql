-- Batches (issue 12): a parent of ordinary jobs, fed at the pace the workers take them.

-- S3-compatible buckets of a tenant; `secret` and `session_token` sealed (Fernet).
CREATE TABLE jobs.storage_connections (
    connection_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    endpoint text NOT NULL,
    bucket text NOT NULL,
    region text NOT NULL,
    access_key_id text NOT NULL,
    secret text NOT NULL,
    session_token text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_connections_tenant_idx ON jobs.storage_connections (tenant_id, created_at);

CREATE TABLE jobs.batches (
    batch_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    state text NOT NULL,
    -- pixmesh.common.v1.StorageLocation, NULL for a list of images.
    source bytea,
    destination bytea,
    -- pixmesh.common.v1.Job with operations and renditions: the pipeline of every item.
    pipeline bytea NOT NULL,
    idempotency_key text,
    request_hash text NOT NULL,
    webhook_url text,
    webhook_secret text,
    total integer NOT NULL,
    -- pixmesh.common.v1.BatchSummary, once it ended.
    summary bytea,
    error_code text,
    error_reason text,
    error_message text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    finished_at timestamptz,
    -- The feeder that holds the batch until then (one replica feeds a batch at a time).
    lease_until timestamptz NOT NULL DEFAULT '-infinity',
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX batches_tenant_idx ON jobs.batches (tenant_id, created_at DESC, batch_id DESC);
CREATE INDEX batches_running_idx ON jobs.batches (lease_until) WHERE state = 'RUNNING';

-- One image of a batch. state: QUEUED (no job yet), SUBMITTED (its job runs), then SUCCEEDED,
-- FAILED or CANCELLED once settled (outputs recorded, copied to the destination).
CREATE TABLE jobs.batch_items (
    batch_id text NOT NULL REFERENCES jobs.batches ON DELETE CASCADE,
    idx integer NOT NULL,
    name text NOT NULL,
    -- pixmesh.common.v1.Image of an uploaded image; NULL for an object of a storage source.
    image bytea,
    object_key text,
    size_bytes bigint NOT NULL DEFAULT 0,
    state text NOT NULL DEFAULT 'QUEUED',
    job_id text,
    error_reason text,
    error_message text,
    bytes_out bigint NOT NULL DEFAULT 0,
    -- Seconds of processing (first stage started to job finished).
    seconds double precision,
    -- pixmesh.jobs.v1.ListArchiveEntriesResponse: the outputs with their archive names.
    outputs bytea,
    destination_key text,
    PRIMARY KEY (batch_id, idx)
);
CREATE INDEX batch_items_open_idx ON jobs.batch_items (batch_id, state, idx)
    WHERE state IN ('QUEUED', 'SUBMITTED');
CREATE INDEX batch_items_job_idx ON jobs.batch_items (job_id) WHERE job_id IS NOT NULL;
