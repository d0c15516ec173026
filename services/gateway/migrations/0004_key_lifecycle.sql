-- API key lifecycle (issue 15): a display prefix, a name, scopes, an expiry (also set by a
-- rotation's grace period), when it was last used and which key replaced it.
-- Keys created before scopes existed keep working with every scope (read, write, admin);
-- from now on every INSERT names its scopes (no default).
ALTER TABLE gateway.api_keys
    ADD COLUMN prefix       text NOT NULL DEFAULT '',
    ADD COLUMN name         text NOT NULL DEFAULT '',
    ADD COLUMN scopes       text[] NOT NULL DEFAULT ARRAY['read', 'write', 'admin'],
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz,
    ADD COLUMN rotated_to   text REFERENCES gateway.api_keys (key_id);
ALTER TABLE gateway.api_keys ALTER COLUMN scopes DROP DEFAULT;
ALTER TABLE gateway.api_keys ADD CONSTRAINT api_keys_scopes_known
    CHECK (scopes <@ ARRAY['read', 'write', 'admin'] AND cardinality(scopes) > 0);
CREATE INDEX api_keys_tenant_idx ON gateway.api_keys (tenant_id, created_at);
