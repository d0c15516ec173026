"""The few calls where the asyncio client differs from the synchronous one, by name.

pixmesh/aio.py (the one hand-written client) imports them from here; pixmesh/client.py, generated
from it by unasync (pixmesh/_unasync.py), imports the same names from pixmesh._sync_io.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import BinaryIO

import grpc
from grpc import aio

from pixmesh._common import CHUNK_SIZE, UploadSource
from pixmesh._folder import process_folder
from pixmesh.gateway.v1 import gateway_pb2 as gw

__all__ = ["open_channel", "run_folder", "sleep", "to_thread", "upload_requests"]

# The folder engine is asyncio code; the sync client runs it in a loop of its own (_sync_io).
run_folder = process_folder

sleep = asyncio.sleep
# File reads and the presigned-URL PUT run on a worker thread, so they do not stall the loop.
to_thread = asyncio.to_thread


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: list[tuple[str, str | int]],
) -> aio.Channel:
    if credentials is not None:
        return aio.secure_channel(target, credentials, options)
    return aio.insecure_channel(target, options)


async def upload_requests(
    src: UploadSource, reader: BinaryIO
) -> AsyncIterator[gw.UploadImageRequest]:
    """The info message, then the data in chunks of at most CHUNK_SIZE bytes."""
    yield src.info_request()
    while chunk := await asyncio.to_thread(reader.read, CHUNK_SIZE):
        yield gw.UploadImageRequest(chunk=chunk)
