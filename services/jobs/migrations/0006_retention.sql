-- Retention (issue 16). The outbox relay now deletes the rows it publishes (in the transaction
-- that commits only after JetStream acked them), so rows marked published by earlier releases
-- are removed here once; `published_at` stays for them and is NULL on every row from now on.
DELETE FROM jobs.outbox WHERE published_at IS NOT NULL;

-- Processed-event ids are kept for the redelivery horizon only (JobsSettings
-- processed_events_retention): the trim deletes by age, oldest first.
CREATE INDEX processed_events_processed_at ON jobs.processed_events (processed_at);
