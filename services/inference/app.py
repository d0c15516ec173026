"""Composition root of the inference worker.

Models are loaded and warmed up here, before `build` yields: the runtime reports SERVING (and
the gateway sees denoise as available) only once they are ready.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager

from pixmesh.inference.v1 import inference_pb2, inference_pb2_grpc
from services.inference.api import InferenceApi
from services.inference.batcher import BatchingOptions
from services.inference.consumers import processor
from services.inference.models import ModelManager
from services.inference.runner import RunnerOptions
from services.inference.service import InferenceService, TileOptions
from services.inference.settings import InferenceSettings
from services.runtime import metrics
from services.runtime.imageprobe import ProbeLimits, configure_pillow
from services.runtime.server import App, GrpcService
from services.runtime.worker import connect_worker, worker_loops


def batching_options(settings: InferenceSettings) -> BatchingOptions:
    return BatchingOptions(
        max_batch_size=settings.max_batch_size,
        max_queue_delay_s=settings.max_queue_delay_us / 1e6,
        max_concurrency=settings.model_concurrency,
        # Room for every task's tiles in flight, so a full queue means real overload.
        max_queue=max(settings.max_batch_size, settings.concurrency * settings.tiles_in_flight),
    )


@asynccontextmanager
async def build(settings: InferenceSettings) -> AsyncIterator[App]:
    configure_pillow(settings.max_pixels)
    async with AsyncExitStack() as stack:
        # Decoding, colour work and onnxruntime runs share this bound; onnxruntime spreads one
        # run over intra_op_threads itself.
        executor = stack.enter_context(
            ThreadPoolExecutor(settings.cpu_workers, thread_name_prefix="inference")
        )
        batching = batching_options(settings)
        models = ModelManager(
            settings.models_dir,
            executor,
            RunnerOptions(settings.execution_provider, settings.intra_op_threads),
            batching,
            warmup_side=settings.tile_size,
        )
        stack.push_async_callback(models.close)
        await models.load_many(settings.models)
        metrics.INFERENCE_PROVIDER_INFO(models.provider).set(1)
        service = InferenceService(
            models,
            executor,
            ProbeLimits(settings.max_input_bytes, settings.max_pixels, settings.max_frames),
            TileOptions(
                settings.tile_size,
                settings.tile_overlap,
                settings.tile_halo,
                settings.tiles_in_flight,
            ),
            default_depth=settings.default_depth,
            precision=settings.precision,
            chroma_scale=settings.chroma_scale,
            ensemble=settings.ensemble,
            blend=settings.model_blend,
            chroma_refine=settings.chroma_refine,
            luma_pair=settings.luma_pair,
        )
        consumer = await connect_worker(stack, settings, processor(service))
        api = InferenceApi(
            service,
            models,
            batching,
            sync_max_pixels=settings.sync_max_pixels,
            sync_concurrency=settings.sync_concurrency,
        )
        yield App(
            services=[
                GrpcService.of(
                    inference_pb2.DESCRIPTOR,
                    "InferenceService",
                    inference_pb2_grpc.add_InferenceServiceServicer_to_server,
                    api,
                )
            ],
            workers=worker_loops(settings, consumer),
        )
