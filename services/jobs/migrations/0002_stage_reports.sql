-- How a stage's operations ran (e.g. a denoise's model and noise levels), as reported by its
-- worker: a pixmesh.common.v1.Stage holding only `reports`, so new report kinds need no migration.
ALTER TABLE jobs.stages ADD COLUMN reports bytea;
