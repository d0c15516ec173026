"""Composition root of the metadata worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager

from pixmesh.metadata.v1 import metadata_pb2, metadata_pb2_grpc
from services.metadata.api import MetadataApi
from services.metadata.consumers import processor, upload_consumer
from services.metadata.preview import Previews
from services.metadata.repository import MIGRATIONS, SCHEMA, MetadataRepository
from services.metadata.service import MetadataService
from services.metadata.settings import MetadataSettings
from services.runtime import db
from services.runtime.imageprobe import configure_pillow
from services.runtime.server import App, GrpcService
from services.runtime.storage import Storage
from services.runtime.worker import connect_worker, worker_loops


@asynccontextmanager
async def build(settings: MetadataSettings) -> AsyncIterator[App]:
    # Pixels are decoded now (colours, hashes): the same hard pixel limit as everywhere else.
    configure_pillow(settings.max_pixels)
    async with AsyncExitStack() as stack:
        pool = await db.open_pool(stack, settings.database_url, SCHEMA, MIGRATIONS)
        executor = stack.enter_context(
            ThreadPoolExecutor(settings.cpu_workers, thread_name_prefix="metadata")
        )
        storage = Storage.from_settings(settings)
        service = MetadataService(
            MetadataRepository(pool),
            executor,
            images=storage,
            strip_gps=settings.strip_gps,
        )
        tasks = await connect_worker(stack, settings, processor(service))
        uploads = upload_consumer(tasks.bus, settings, service)
        await uploads.setup()
        api = MetadataApi(service, Previews(storage, executor))
        yield App(
            services=[
                GrpcService.of(
                    metadata_pb2.DESCRIPTOR,
                    "MetadataService",
                    metadata_pb2_grpc.add_MetadataServiceServicer_to_server,
                    api,
                )
            ],
            workers=worker_loops(settings, tasks, uploads),
        )
