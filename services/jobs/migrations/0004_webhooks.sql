-- Webhooks: where a job is POSTed once it ends, and how that delivery goes. One row per job that
-- asked for one. `next_attempt_at` is NULL while the job runs; the change that ends the job sets it
-- (same transaction), the delivery loop claims due rows (FOR UPDATE SKIP LOCKED, then leased by
-- moving next_attempt_at forward) and records each attempt.
CREATE TABLE jobs.webhook_deliveries (
    job_id          text PRIMARY KEY REFERENCES jobs.jobs (job_id) ON DELETE CASCADE,
    url             text NOT NULL,
    secret          text,                    -- the job's signing key; NULL: the deployment's
    state           text NOT NULL DEFAULT 'PENDING' CHECK (state IN ('PENDING','DELIVERED','FAILED')),
    attempts        int  NOT NULL DEFAULT 0,
    last_error      text,
    event_id        text,                    -- the JobStateChanged that ended the job
    next_attempt_at timestamptz,
    delivered_at    timestamptz
);
CREATE INDEX webhook_deliveries_due ON jobs.webhook_deliveries (next_attempt_at)
    WHERE state = 'PENDING' AND next_attempt_at IS NOT NULL;
