-- Metadata extracted from images, one row per tenant and image content.
-- The full ImageMetadata (proto3 JSON) lives in `doc`; the columns beside it are copies of the
-- fields people filter and sort on, kept in step by the repository's upsert.
CREATE SCHEMA IF NOT EXISTS metadata;

CREATE TABLE metadata.image_metadata (
    tenant_id         text             NOT NULL,
    sha256            text             NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    format            text             NOT NULL,
    -- bigint: the wire type is uint32, and TIFF headers may claim more than 2^31 - 1.
    width             bigint           NOT NULL CHECK (width >= 0),
    height            bigint           NOT NULL CHECK (height >= 0),
    mode              text             NOT NULL,
    frame_count       integer          NOT NULL CHECK (frame_count >= 0),
    size_bytes        bigint           NOT NULL CHECK (size_bytes >= 0),
    make              text,
    model             text,
    -- The camera's wall-clock time as recorded: EXIF has no zone, so this is `timestamp`, not
    -- `timestamptz`; date_taken_offset ("+02:00") is set when the camera wrote one.
    date_taken        timestamp,
    date_taken_offset text,
    gps_latitude      double precision CHECK (gps_latitude BETWEEN -90 AND 90),
    gps_longitude     double precision CHECK (gps_longitude BETWEEN -180 AND 180),
    orientation       smallint         CHECK (orientation BETWEEN 1 AND 8),
    doc               jsonb            NOT NULL,
    created_at        timestamptz      NOT NULL DEFAULT now(),
    updated_at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sha256),
    CHECK ((gps_latitude IS NULL) = (gps_longitude IS NULL))
);

CREATE INDEX image_metadata_camera_idx ON metadata.image_metadata (tenant_id, make, model);
CREATE INDEX image_metadata_taken_idx ON metadata.image_metadata (tenant_id, date_taken);
