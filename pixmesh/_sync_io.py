"""The synchronous side of pixmesh._async_io: the same names, for the generated pixmesh/client.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from time import sleep
from typing import BinaryIO, ParamSpec, TypeVar

import grpc

from pixmesh._common import UploadSource
from pixmesh.gateway.v1 import gateway_pb2 as gw

__all__ = ["open_channel", "sleep", "to_thread", "upload_requests"]

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
