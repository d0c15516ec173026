-- Videos (issue 13): what an upload is (1 image, 2 video: pixmesh.common.v1.Image.Kind; NULL
-- for rows recorded before, read as an image) and a video's header (a serialized
-- pixmesh.common.v1.VideoInfo: container, duration, frame rate, codecs, ...).
ALTER TABLE gateway.images
    ADD COLUMN kind smallint,
    ADD COLUMN video bytea;
