-- CreateJob `reuse: false`: every stage of the job computes its outputs even when identical work
-- already stored them (the tasks carry `recompute`). False for every existing row.
ALTER TABLE jobs.jobs ADD COLUMN recompute boolean NOT NULL DEFAULT false;
