"""REST paths come from the gateway proto's `google.api.http` rules, not from a service."""

from __future__ import annotations

from pixmesh.common.v1 import job_pb2
from services.runtime.routes import link_outputs, output_download_path, rest_path


def test_paths_are_the_proto_rules_with_their_fields_filled() -> None:
    assert output_download_path("job_abc", 2) == "/v1/jobs/job_abc/outputs/2"
    assert rest_path("GetJob", job_id="job_abc") == "/v1/jobs/job_abc"
    assert rest_path("GetOutputUrl", job_id="j", index=0) == "/v1/jobs/j/outputs/0:url"


def test_link_outputs_sets_each_outputs_download_path_by_its_index() -> None:
    job = job_pb2.Job(job_id="job_x", outputs=[job_pb2.Output(index=0), job_pb2.Output(index=3)])
    assert link_outputs(job) is job
    assert [o.download_path for o in job.outputs] == [
        "/v1/jobs/job_x/outputs/0",
        "/v1/jobs/job_x/outputs/3",
    ]
