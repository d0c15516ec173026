-- A settled batch item's job outputs (issue 12): pixmesh.common.v1.BatchItem holding only its
-- `outputs` (index, rendition, format, size, sha256, provenance), recorded by the feeder when it
-- settles the item, so ListBatchJobs returns them without reading the job. NULL before, and for
-- items settled before this column (read from their job).
ALTER TABLE jobs.batch_items ADD COLUMN job_outputs bytea;
