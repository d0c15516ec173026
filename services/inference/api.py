"""Thin gRPC adapter of the inference service."""

from __future__ import annotations

from pixmesh.inference.v1 import inference_pb2 as pb
from pixmesh.inference.v1 import inference_pb2_grpc
from services.inference.service import InferenceService
from services.runtime.server import Ctx


class InferenceApi(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, service: InferenceService) -> None:
        self.service = service

    async def ListOperations(
        self, request: pb.ListOperationsRequest, context: Ctx
    ) -> pb.ListOperationsResponse:
        return pb.ListOperationsResponse(capabilities=self.service.capabilities())

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Ctx
    ) -> pb.ListModelsResponse:
        return self.service.list_models()
