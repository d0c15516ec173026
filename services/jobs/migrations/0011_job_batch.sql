-- The batch a job belongs to (issue 12), set only by the batch feeder (services/jobs/batches.py):
-- it picks the lane of the job's tasks (services/jobs/mapping.py `lane`), for the first dispatch,
-- the next stages and a replay alike. NULL for a client's job, whatever its idempotency key.
ALTER TABLE jobs.jobs ADD COLUMN batch_id text;
-- Jobs of batches created before this column: their items name them.
UPDATE jobs.jobs j SET batch_id = i.batch_id
    FROM jobs.batch_items i
    WHERE i.job_id = j.job_id;
