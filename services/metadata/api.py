"""Thin gRPC adapter of the metadata service."""

from __future__ import annotations

from pixmesh.common.v1 import operations_pb2
from pixmesh.metadata.v1 import metadata_pb2 as pb
from pixmesh.metadata.v1 import metadata_pb2_grpc
from services.metadata.service import MetadataService
from services.runtime.server import Ctx

CAPABILITIES = operations_pb2.Capabilities(
    operations=[
        operations_pb2.OperationInfo(
            name="extract_metadata",
            service="metadata",
            description=(
                "Format, dimensions, mode, frame count, size, sha256 and EXIF (camera, lens, "
                "exposure, date taken, orientation, GPS) of the uploaded source image; returned "
                "with the job and stored per tenant."
            ),
            available=True,
        )
    ]
)


class MetadataApi(metadata_pb2_grpc.MetadataServiceServicer):
    def __init__(self, service: MetadataService) -> None:
        self.service = service

    async def ListOperations(
        self, request: pb.ListOperationsRequest, context: Ctx
    ) -> pb.ListOperationsResponse:
        return pb.ListOperationsResponse(capabilities=CAPABILITIES)

    async def GetImageMetadata(
        self, request: pb.GetImageMetadataRequest, context: Ctx
    ) -> pb.GetImageMetadataResponse:
        md = await self.service.get(request.tenant_id, request.sha256)
        return pb.GetImageMetadataResponse(metadata=md)
