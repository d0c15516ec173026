"""pixmesh: distributed image processing over gRPC. The SDK and the `pixmesh` CLI.

    import pixmesh
    from pixmesh import ops

    with pixmesh.Client("127.0.0.1:8080") as client:
        job = client.process("photo.jpg", [ops.resize(800, 600), ops.convert("webp", quality=80)])

Generated messages and stubs live in pixmesh.<domain>.v1 (e.g. pixmesh.gateway.v1.gateway_pb2).
"""

# _buf_validate first: the generated modules import buf.validate.validate_pb2, which it provides.
from pixmesh import _buf_validate, errors, ops  # noqa: F401
from pixmesh._common import VERSION as __version__
from pixmesh.aio import AsyncClient
from pixmesh.client import Client
from pixmesh.common.v1.image_pb2 import Image
from pixmesh.common.v1.job_pb2 import Job
from pixmesh.common.v1.operations_pb2 import Operation

# Every error class at the top level too: `except pixmesh.JobNotFound`.
from pixmesh.errors import *  # noqa: F403

__all__ = [
    "AsyncClient",
    "Client",
    "Image",
    "Job",
    "Operation",
    "__version__",
    "errors",
    "ops",
]
__all__ += errors.__all__
