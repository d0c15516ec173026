-- GetFleetStatus counts the jobs created and finished in the last minute, fleet-wide: without
-- these the count reads the whole table (the other indexes on created_at lead with tenant_id).
-- Open jobs are found through jobs_open_deadline (partial on the same states).
CREATE INDEX jobs_created ON jobs.jobs (created_at);
CREATE INDEX jobs_finished ON jobs.jobs (finished_at) WHERE finished_at IS NOT NULL;
