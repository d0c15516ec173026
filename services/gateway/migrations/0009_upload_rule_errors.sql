-- Upload rules (issue 13): the last failure to create a rule's job, shown by ListUploadRules
-- (the upload itself succeeded; the job must be created by hand).
ALTER TABLE gateway.upload_rules
    ADD COLUMN last_error text,
    ADD COLUMN last_error_reason text,
    ADD COLUMN last_error_image_id text,
    ADD COLUMN last_error_at timestamptz;
