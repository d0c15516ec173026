"""Thin gRPC adapter of the inference service."""

from __future__ import annotations

import asyncio
import time

from pixmesh.inference.v1 import inference_pb2 as pb
from pixmesh.inference.v1 import inference_pb2_grpc
from services.inference import catalog, errors
from services.inference.batcher import BatchingOptions
from services.inference.models import ModelManager
from services.inference.service import InferenceService
from services.runtime import trust
from services.runtime.server import Ctx


class InferenceApi(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self,
        service: InferenceService,
        models: ModelManager,
        batching: BatchingOptions,
        *,
        sync_max_pixels: int,
        sync_concurrency: int,
    ) -> None:
        self.service = service
        self.models = models
        self.batching = batching
        self.sync_max_pixels = sync_max_pixels
        self._sync_slots = asyncio.Semaphore(sync_concurrency)

    async def ListOperations(
        self, request: pb.ListOperationsRequest, context: Ctx
    ) -> pb.ListOperationsResponse:
        return pb.ListOperationsResponse(capabilities=catalog.capabilities(self.models))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Ctx
    ) -> pb.ListModelsResponse:
        return catalog.list_models(self.models)

    async def GetServerMetadata(
        self, request: pb.GetServerMetadataRequest, context: Ctx
    ) -> pb.GetServerMetadataResponse:
        return catalog.server_metadata(
            self.models, self.service.tiles, self.batching, self.service.default_depth
        )

    async def GetModelMetadata(
        self, request: pb.GetModelMetadataRequest, context: Ctx
    ) -> pb.GetModelMetadataResponse:
        return catalog.model_metadata(self.models, request.name, request.version)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Ctx
    ) -> pb.ModelReadyResponse:
        if request.name not in self.models.names:
            raise errors.unknown_model(request.name)
        return pb.ModelReadyResponse(ready=self.models.is_ready(request.name, request.version))

    async def GetModelStatistics(
        self, request: pb.GetModelStatisticsRequest, context: Ctx
    ) -> pb.GetModelStatisticsResponse:
        return catalog.statistics(self.models, request.name, request.version)

    async def LoadModel(self, request: pb.LoadModelRequest, context: Ctx) -> pb.LoadModelResponse:
        trust.require_admin(context)  # model management: operators only
        await self.models.load(request.name, request.version)
        return pb.LoadModelResponse(model=catalog.model_info(self.models.status(request.name)))

    async def UnloadModel(
        self, request: pb.UnloadModelRequest, context: Ctx
    ) -> pb.UnloadModelResponse:
        trust.require_admin(context)
        await self.models.unload(request.name)
        return pb.UnloadModelResponse(model=catalog.model_info(self.models.status(request.name)))

    async def Denoise(self, request: pb.DenoiseRequest, context: Ctx) -> pb.DenoiseResponse:
        if self._sync_slots.locked():
            raise errors.overloaded()
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        async with self._sync_slots:
            out = await self.service.denoise(
                request.image,
                [request.denoise],
                deadline=deadline,
                output_format=request.format or None,
                max_pixels=self.sync_max_pixels,
            )
        img = out.image
        return pb.DenoiseResponse(
            image=img.data,
            format=img.format,
            content_type=img.content_type,
            width=img.width,
            height=img.height,
            report=out.reports[0].denoise,
        )
