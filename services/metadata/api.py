"""Thin gRPC adapter of the metadata service."""

from __future__ import annotations

from pixmesh import rules
from pixmesh.common.v1 import operations_pb2
from pixmesh.metadata.v1 import metadata_pb2 as pb
from pixmesh.metadata.v1 import metadata_pb2_grpc
from services.metadata.preview import CONTENT_TYPE, Previews
from services.metadata.service import MetadataService
from services.runtime.server import Ctx

# The entry is the proto's: ExtractMetadata's comment (pixmesh.rules), not a text beside it.
CAPABILITIES = operations_pb2.Capabilities(
    operations=[rules.operation_info("extract_metadata", "metadata")]
)


class MetadataApi(metadata_pb2_grpc.MetadataServiceServicer):
    def __init__(self, service: MetadataService, previews: Previews | None = None) -> None:
        self.service = service
        self._previews = previews

    async def ListOperations(
        self, request: pb.ListOperationsRequest, context: Ctx
    ) -> pb.ListOperationsResponse:
        return pb.ListOperationsResponse(capabilities=CAPABILITIES)

    async def GetImageMetadata(
        self, request: pb.GetImageMetadataRequest, context: Ctx
    ) -> pb.GetImageMetadataResponse:
        md = await self.service.get(request.tenant_id, request.sha256)
        return pb.GetImageMetadataResponse(metadata=md)

    async def DeleteImageMetadata(
        self, request: pb.DeleteImageMetadataRequest, context: Ctx
    ) -> pb.DeleteImageMetadataResponse:
        deleted = await self.service.delete(
            request.tenant_id, request.sha256, request.all_images, request.sha256s
        )
        return pb.DeleteImageMetadataResponse(deleted=deleted)

    async def SearchImages(
        self, request: pb.SearchImagesRequest, context: Ctx
    ) -> pb.SearchImagesResponse:
        images, token = await self.service.search(
            request.tenant_id, request.filter, request.page_size, request.page_token
        )
        return pb.SearchImagesResponse(images=images, next_page_token=token)

    async def FindSimilar(
        self, request: pb.FindSimilarRequest, context: Ctx
    ) -> pb.FindSimilarResponse:
        distance = request.max_distance if request.HasField("max_distance") else None
        images = await self.service.find_similar(
            request.tenant_id, request.sha256, distance, request.page_size
        )
        return pb.FindSimilarResponse(images=images)

    async def GetImagePreview(
        self, request: pb.GetImagePreviewRequest, context: Ctx
    ) -> pb.GetImagePreviewResponse:
        assert self._previews is not None, "MetadataApi built without Previews"
        p = await self._previews.get(request.sha256, request.max_size)
        return pb.GetImagePreviewResponse(
            data=p.data, content_type=CONTENT_TYPE, width=p.width, height=p.height
        )
