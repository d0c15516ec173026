"""Composition root of the inference worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from pixmesh.inference.v1 import inference_pb2, inference_pb2_grpc
from services.inference.api import InferenceApi
from services.inference.service import InferenceService, scan_repository
from services.inference.settings import InferenceSettings
from services.runtime.server import App, GrpcService
from services.runtime.worker import connect_worker


@asynccontextmanager
async def build(settings: InferenceSettings) -> AsyncIterator[App]:
    service = InferenceService(scan_repository(settings.models_dir))
    async with AsyncExitStack() as stack:
        consumer = await connect_worker(stack, settings, service.process)
        api = InferenceApi(service)
        name = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
        yield App(
            services=[
                GrpcService(
                    name,
                    lambda s: inference_pb2_grpc.add_InferenceServiceServicer_to_server(api, s),
                )
            ],
            workers=[consumer.run],
        )
