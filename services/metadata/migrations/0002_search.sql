-- Search and near-duplicate lookup (issue 5): the gateway's image id beside each row, more typed
-- copies of common fields, the perceptual hashes, and the indexes the queries use. Every index
-- leads with tenant_id: no query ever reads across tenants.

ALTER TABLE metadata.image_metadata
    -- The gateway's id for this (tenant, sha256); NULL only for rows written before this
    -- migration by an extract_metadata job. Searches list rows that have one.
    ADD COLUMN image_id        text,
    ADD COLUMN lens_model      text,
    ADD COLUMN iso             bigint           CHECK (iso > 0),
    ADD COLUMN f_number        double precision CHECK (f_number > 0),
    ADD COLUMN exposure_time_s double precision CHECK (exposure_time_s > 0),
    ADD COLUMN focal_length_mm double precision CHECK (focal_length_mm > 0),
    ADD COLUMN gps_altitude_m  double precision,
    ADD COLUMN bit_depth       smallint,
    ADD COLUMN duration_ms     bigint           CHECK (duration_ms >= 0),
    -- 64-bit hashes as signed bigints (two's complement of the unsigned value).
    ADD COLUMN phash           bigint,
    ADD COLUMN dhash           bigint,
    -- The same document as `doc`, as protobuf bytes: what reads decode. Parsing proto3 JSON
    -- costs about 1.4 ms per record in Python, 0.003 ms from bytes (bench/metadata.py: a page
    -- of 20 results spent 30 ms in JSON). `doc` stays the queryable form. NULL in rows written
    -- before this migration, which are read from `doc`.
    ADD COLUMN doc_pb          bytea;

CREATE UNIQUE INDEX image_metadata_image_id_idx ON metadata.image_metadata (tenant_id, image_id);

-- Camera filters compare case-insensitively.
DROP INDEX metadata.image_metadata_camera_idx;
CREATE INDEX image_metadata_camera_idx
    ON metadata.image_metadata (tenant_id, lower(make), lower(model));

CREATE INDEX image_metadata_gps_idx
    ON metadata.image_metadata (tenant_id, gps_latitude, gps_longitude)
    WHERE gps_latitude IS NOT NULL;

CREATE INDEX image_metadata_size_idx ON metadata.image_metadata (tenant_id, width, height);
CREATE INDEX image_metadata_format_idx ON metadata.image_metadata (tenant_id, format);

-- SearchImages pages newest first by (created_at, sha256).
CREATE INDEX image_metadata_recent_idx
    ON metadata.image_metadata (tenant_id, created_at DESC, sha256 DESC);

-- FindSimilar reads hashes from indexes alone (index-only scans, INCLUDE (phash, sha256)) and
-- fetches the documents of the few nearest rows only.
-- Multi-index hashing: the 64-bit pHash split into four 16-bit bands. Two hashes within Hamming
-- distance d agree within floor(d / 4) bits on at least one band (pigeonhole), so probing each
-- band's index for the few values that close to the query's band finds every candidate;
-- bit_count on the full hash keeps the true matches.
CREATE INDEX image_metadata_phash_band0_idx
    ON metadata.image_metadata (tenant_id, ((phash >> 48) & 65535)) INCLUDE (phash, sha256)
    WHERE phash IS NOT NULL AND image_id IS NOT NULL;
CREATE INDEX image_metadata_phash_band1_idx
    ON metadata.image_metadata (tenant_id, ((phash >> 32) & 65535)) INCLUDE (phash, sha256)
    WHERE phash IS NOT NULL AND image_id IS NOT NULL;
CREATE INDEX image_metadata_phash_band2_idx
    ON metadata.image_metadata (tenant_id, ((phash >> 16) & 65535)) INCLUDE (phash, sha256)
    WHERE phash IS NOT NULL AND image_id IS NOT NULL;
CREATE INDEX image_metadata_phash_band3_idx
    ON metadata.image_metadata (tenant_id, (phash & 65535)) INCLUDE (phash, sha256)
    WHERE phash IS NOT NULL AND image_id IS NOT NULL;
-- Wide searches (max_distance > 11) scan this instead of the table.
CREATE INDEX image_metadata_phash_idx
    ON metadata.image_metadata (tenant_id) INCLUDE (phash, sha256)
    WHERE phash IS NOT NULL AND image_id IS NOT NULL;
