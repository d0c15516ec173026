"""Composition root of the imaging worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from pixmesh.imaging.v1 import imaging_pb2, imaging_pb2_grpc
from services.imaging.api import ImagingApi
from services.imaging.consumers import processor, resolve
from services.imaging.isolation import ProcessPool
from services.imaging.service import ImagingProcessor
from services.imaging.settings import ImagingSettings
from services.runtime import video
from services.runtime.imageprobe import configure_pillow
from services.runtime.server import App, GrpcService
from services.runtime.storage import Storage
from services.runtime.worker import connect_worker, worker_loops

# Lifetime of the URL a pipeline child reads its input from: it is used at once.
PRESIGN_S = 600


@asynccontextmanager
async def build(settings: ImagingSettings) -> AsyncIterator[App]:
    configure_pillow(settings.max_pixels)
    async with AsyncExitStack() as stack:
        # Bounded: at most cpu_workers pipelines run at once, each in its own child process (a
        # decoder crash costs one task); the consumer's concurrency bounds how many wait.
        # Closed last, after the consumer has drained.
        pool = ProcessPool(settings.isolation)
        stack.callback(pool.close)
        await pool.start()
        imaging = ImagingProcessor(
            pool,
            settings.limits,
            webp_effort=settings.webp_effort,
            video_limits=video.limits_of(settings),
        )
        # The pipeline children read their inputs themselves, from presigned URLs (signing is
        # local: no request).
        storage = Storage.from_settings(settings)

        def presign(key: str) -> str:
            return storage.presign_get(key, "", PRESIGN_S)

        consumer = await connect_worker(
            stack,
            settings,
            processor(imaging, presign),
            resolve=resolve(imaging),
            reads_input=True,
        )
        api = ImagingApi(imaging)
        yield App(
            services=[
                GrpcService.of(
                    imaging_pb2.DESCRIPTOR,
                    "ImagingService",
                    imaging_pb2_grpc.add_ImagingServiceServicer_to_server,
                    api,
                )
            ],
            workers=worker_loops(settings, consumer),
        )
