-- Retention deletes a tenant's finished jobs in batches, those finished first
-- (services/jobs/deletion.py, DeleteJobsRequest.limit): this index finds them without walking
-- the finished jobs of every other tenant (jobs_finished orders all tenants' rows together).
CREATE INDEX jobs_tenant_finished ON jobs.jobs (tenant_id, finished_at) WHERE finished_at IS NOT NULL;
-- DeleteImage and the retention of sources delete an image's jobs: found by this index rather
-- than by walking every job of the tenant.
CREATE INDEX jobs_tenant_image ON jobs.jobs (tenant_id, image_id);
