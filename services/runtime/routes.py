"""Public REST paths, read from the `google.api.http` options of the gateway's proto (the one
place routes are written) rather than written again in a service."""

from __future__ import annotations

import functools
import re

from google.api import annotations_pb2

from pixmesh.common.v1 import job_pb2
from pixmesh.gateway.v1 import gateway_pb2

_FIELD = re.compile(r"\{([a-z_]+)\}")


@functools.cache
def _template(method: str) -> str:
    rpc = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].methods_by_name[method]
    rule = rpc.GetOptions().Extensions[annotations_pb2.http]
    template: str = getattr(rule, rule.WhichOneof("pattern") or "get")
    return template


def rest_path(method: str, **fields: object) -> str:
    """The REST path of the gateway RPC `method` with its path fields filled in."""
    return _FIELD.sub(lambda m: str(fields[m.group(1)]), _template(method))


def output_download_path(job_id: str, index: int) -> str:
    """Where one output of a job downloads through the front proxy (DownloadOutput)."""
    return rest_path("DownloadOutput", job_id=job_id, index=index)


def link_outputs(job: job_pb2.Job) -> job_pb2.Job:
    """The job with each output's `download_path` set, as REST shows it (in place; returned
    for chaining). Inside the mesh a job carries no REST path: the gateway links the jobs it
    returns, the jobs service the job in a webhook's body."""
    for output in job.outputs:
        output.download_path = output_download_path(job.job_id, output.index)
    return job
