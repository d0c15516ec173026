"""The synchronous side of pixmesh._async_io: the same names, for the generated pixmesh/client.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from time import sleep
from typing import TYPE_CHECKING, Any, BinaryIO, ParamSpec, TypeVar

import grpc

from pixmesh import ops
from pixmesh._common import UploadSource
from pixmesh._folder import FolderSummary, process_folder
from pixmesh.gateway.v1 import gateway_pb2 as gw

__all__ = ["open_channel", "run_folder", "sleep", "to_thread", "upload_requests"]

if TYPE_CHECKING:
    from pixmesh.aio import AsyncClient
    from pixmesh.client import Client

P = ParamSpec("P")
R = TypeVar("R")


def to_thread(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `func` here: a synchronous caller has no loop to keep free."""
    return func(*args, **kwargs)


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: list[tuple[str, str | int]],
) -> grpc.Channel:
    if credentials is not None:
        return grpc.secure_channel(target, credentials, options)
    return grpc.insecure_channel(target, options)


def upload_requests(src: UploadSource, reader: BinaryIO) -> Iterator[gw.UploadImageRequest]:
    return src.requests(reader)


def run_folder(
    client: Client,
    source: Path,
    destination: Path,
    operations: Iterable[ops.OperationLike] = (),
    **options: Any,
) -> FolderSummary:
    """Client.process_folder: the asyncio folder engine (pixmesh._folder) in a loop of its own,
    over an AsyncClient with the same target, key, deadlines and credentials."""

    async def run() -> FolderSummary:
        async with async_twin(client) as aclient:
            return await process_folder(aclient, source, destination, operations, **options)

    return asyncio.run(run())


def async_twin(client: Client) -> AsyncClient:
    """An AsyncClient with the same target, key, deadlines and credentials (create it inside
    the event loop that will use it)."""
    from pixmesh.aio import AsyncClient

    s = client.settings
    return AsyncClient(
        s.target,
        s.api_key,
        timeout=s.timeout,
        retries=s.retries,
        watch_timeout=s.watch_timeout,
        credentials=client.credentials,
    )
