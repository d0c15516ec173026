-- Upload rules (issue 13): every upload of a kind (1 image, 2 video: pixmesh.common.v1.Image.Kind)
-- runs a preset as a job. One rule per tenant and kind.
CREATE TABLE gateway.upload_rules (
    tenant_id text NOT NULL,
    kind smallint NOT NULL CHECK (kind IN (1, 2)),
    preset text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind)
);
