-- The EXIF orientation (1..8) read from the header at upload. Images recorded before it was
-- kept have NULL, returned as 0 ("unknown", read as 1): their bytes are not read again.
ALTER TABLE gateway.images ADD COLUMN orientation smallint CHECK (orientation BETWEEN 1 AND 8);
