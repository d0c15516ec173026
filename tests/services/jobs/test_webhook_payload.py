"""The webhook body shows the job as REST returns it: its outputs' download paths included,
though the jobs service's own view of a job carries no REST path."""

from __future__ import annotations

import json

from pixmesh.common.v1 import job_pb2
from services.jobs.webhooks import payload


def test_the_body_links_the_outputs_and_leaves_the_job_as_it_was() -> None:
    job = job_pb2.Job(
        job_id="job_w",
        state=job_pb2.Job.SUCCEEDED,
        outputs=[job_pb2.Output(index=0, width=64), job_pb2.Output(index=1, rendition="b")],
    )
    doc = json.loads(payload("ev_1", job))
    assert doc["type"] == "job.succeeded" and doc["event_id"] == "ev_1"
    assert [o["download_path"] for o in doc["job"]["outputs"]] == [
        "/v1/jobs/job_w/outputs/0",
        "/v1/jobs/job_w/outputs/1",
    ]
    assert [o.download_path for o in job.outputs] == ["", ""]
