-- Per-tenant limits (issue 15); NULL: the deployment's default from settings
-- (PIXMESH_RATE_LIMIT_RPS, PIXMESH_MAX_RUNNING_JOBS, PIXMESH_MAX_JOBS_PER_DAY,
-- PIXMESH_MAX_STORED_BYTES); 0: unlimited.
ALTER TABLE gateway.tenants
    ADD COLUMN requests_per_second int    CHECK (requests_per_second >= 0),
    ADD COLUMN running_jobs        int    CHECK (running_jobs >= 0),
    ADD COLUMN jobs_per_day        int    CHECK (jobs_per_day >= 0),
    ADD COLUMN stored_bytes        bigint CHECK (stored_bytes >= 0);
