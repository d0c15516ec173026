-- The job registry. Protobuf columns (bytea) hold the exact request so a job can be replayed
-- and returned without lossy re-mapping; the columns queried by the API are typed and indexed.
CREATE TABLE jobs.jobs (
    job_id          text PRIMARY KEY,
    tenant_id       text NOT NULL,
    image_id        text NOT NULL,
    state           text NOT NULL CHECK (state IN ('PENDING','RUNNING','SUCCEEDED','FAILED','CANCELLED')),
    operations      bytea NOT NULL,          -- pixmesh.common.v1 Operation list (Job.operations)
    source          bytea NOT NULL,          -- pixmesh.common.v1.Image
    idempotency_key text,
    request_hash    text,
    metadata        bytea,                   -- pixmesh.common.v1.ImageMetadata
    error_code      text,
    error_reason    text,
    error_message   text,
    deadline        timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    -- Backstop for idempotency keys (Redis is the fast path at the gateway).
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX jobs_tenant_created ON jobs.jobs (tenant_id, created_at DESC, job_id DESC);
CREATE INDEX jobs_tenant_state_created ON jobs.jobs (tenant_id, state, created_at DESC, job_id DESC);
CREATE INDEX jobs_open_deadline ON jobs.jobs (deadline) WHERE state IN ('PENDING','RUNNING');

CREATE TABLE jobs.stages (
    job_id        text NOT NULL REFERENCES jobs.jobs (job_id) ON DELETE CASCADE,
    idx           int  NOT NULL,
    service       text NOT NULL,
    operations    bytea NOT NULL,
    state         text NOT NULL CHECK (state IN ('PENDING','RUNNING','SUCCEEDED','FAILED','CANCELLED')),
    attempts      int  NOT NULL DEFAULT 0,
    input_key     text,
    output_key    text,
    output        bytea,                     -- pixmesh.common.v1.Output
    error_code    text,
    error_reason  text,
    error_message text,
    started_at    timestamptz,
    finished_at   timestamptz,
    PRIMARY KEY (job_id, idx)
);

-- Transactional outbox: rows are written with the state change and published by the relay.
CREATE TABLE jobs.outbox (
    id           bigserial PRIMARY KEY,
    subject      text NOT NULL,
    msg_id       text NOT NULL,
    payload      bytea NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON jobs.outbox (id) WHERE published_at IS NULL;

-- Events already applied (at-least-once delivery, exactly-once effect).
CREATE TABLE jobs.processed_events (
    event_id     text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
