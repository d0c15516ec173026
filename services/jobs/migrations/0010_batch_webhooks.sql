-- A batch's webhook (issue 12): posted once the batch ended, retried with backoff like a job's.
-- webhook_state: NULL (no webhook, or the batch still runs), PENDING, DELIVERED, FAILED.
ALTER TABLE jobs.batches
    ADD COLUMN webhook_state text,
    ADD COLUMN webhook_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN webhook_next_at timestamptz,
    ADD COLUMN webhook_last_error text;
CREATE INDEX batches_webhook_due_idx ON jobs.batches (webhook_next_at)
    WHERE webhook_state = 'PENDING';
