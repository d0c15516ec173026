"""Zip archives of outputs (GET /v1/jobs/{id}/archive, GET /v1/batches/{id}/archive), streamed.

Chosen: streamed by the gateway, not built by a worker into object storage. The archive is made
as it is sent, from the outputs already stored, with stream-zip: memory stays at a few chunks
whatever the archive's size (ZIP64 members and central directory, so past 4 GB and 65,535
members), nothing is stored twice, and the first bytes leave at once instead of after a build
of the whole batch. A dropped download is simply asked again (the bytes are deterministic: the
same outputs give the same archive). A worker-built archive would pay a second copy of every
output in storage, a retention rule for it, and a wait before the download starts; it wins only
where clients must fetch from S3 directly, which presigned URLs of each output already allow.

Members are "stored" (deflate level 0 blocks): outputs are JPEG/WebP/AVIF/PNG, already
compressed, so compressing again costs CPU for nothing; level-0 deflate streams with a data
descriptor, so no member is ever held whole in memory to compute its CRC first.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from datetime import datetime

from stream_zip import ZIP_64, stream_zip

from pixmesh.common.v1 import batch_pb2

# Members carry this time: the archive's bytes depend on the outputs only.
MEMBER_TIME = datetime(2000, 1, 1)
# Bytes per message sent (each a gRPC message / an HTTP chunk through Envoy).
MESSAGE_BYTES = 1024 * 1024
READ_CHUNK = 256 * 1024

ReadObject = Callable[[str], Iterable[bytes]]


def zip_chunks(entries: Sequence[batch_pb2.ArchiveEntry], read: ReadObject) -> Iterator[bytes]:
    """The archive, in order (blocking: objects are read as the archive is consumed)."""
    members = ((entry.name, MEMBER_TIME, 0o644, ZIP_64, read(entry.key)) for entry in entries)
    yield from stream_zip(
        members,
        chunk_size=READ_CHUNK,
        get_compressobj=lambda: zlib.compressobj(level=0, wbits=-zlib.MAX_WBITS),
    )


async def stream_archive(
    entries: Sequence[batch_pb2.ArchiveEntry], read: ReadObject
) -> AsyncIterator[bytes]:
    """`zip_chunks` off the event loop, grouped into messages of about MESSAGE_BYTES; the next
    chunk is made only when the previous message was taken (bounded memory)."""
    it = zip_chunks(entries, read)
    done = object()
    pending: list[bytes] = []
    size = 0
    while True:
        chunk = await asyncio.to_thread(next, it, done)
        if chunk is done:
            break
        assert isinstance(chunk, bytes)
        pending.append(chunk)
        size += len(chunk)
        if size >= MESSAGE_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)
