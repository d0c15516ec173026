"""Thin gRPC adapter of the imaging service."""

from __future__ import annotations

from pixmesh.imaging.v1 import imaging_pb2 as pb
from pixmesh.imaging.v1 import imaging_pb2_grpc
from services.imaging.service import ImagingProcessor
from services.runtime.server import Ctx


class ImagingApi(imaging_pb2_grpc.ImagingServiceServicer):
    def __init__(self, imaging: ImagingProcessor) -> None:
        self.imaging = imaging

    async def ListOperations(
        self, request: pb.ListOperationsRequest, context: Ctx
    ) -> pb.ListOperationsResponse:
        return pb.ListOperationsResponse(capabilities=self.imaging.capabilities())

    async def PlanPipeline(
        self, request: pb.PlanPipelineRequest, context: Ctx
    ) -> pb.PlanPipelineResponse:
        plan = self.imaging.plan(request.image, request.operations, request.renditions)
        return pb.PlanPipelineResponse(plan=plan, plan_fingerprint=self.imaging.plan_fingerprint)
