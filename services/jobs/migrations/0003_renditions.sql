-- Renditions: several outputs of one source (pixmesh.common.v1.Rendition, presets expanded).
-- The job's list as a pixmesh.common.v1.Job holding only `renditions`, the rendition stage's as
-- a pixmesh.common.v1.Stage holding only `renditions`; NULL (every existing row): none.
ALTER TABLE jobs.jobs ADD COLUMN renditions bytea;
ALTER TABLE jobs.stages ADD COLUMN renditions bytea;
-- What the rendition stage produced: a pixmesh.events.v1.TaskCompleted holding only
-- `rendition_outputs` (object key and Output of each rendition, in rendition order).
ALTER TABLE jobs.stages ADD COLUMN rendition_outputs bytea;
