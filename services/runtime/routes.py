"""Public REST paths, read from the `google.api.http` options of the gateway's proto (the one
place routes are written) rather than written again in a service."""

from __future__ import annotations

import functools
import re

from google.api import annotations_pb2

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
