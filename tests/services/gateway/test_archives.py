"""Zip archives streamed in bounded memory: zipfile opens them, members are the bytes given,
in order, and a member is never read ahead of the archive's consumer."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import zipfile
from collections.abc import Iterator

from pixmesh.common.v1 import batch_pb2
from services.gateway.archives import MESSAGE_BYTES, stream_archive, zip_chunks


def _objects(sizes: dict[str, int]) -> dict[str, bytes]:
    return {key: os.urandom(size) for key, size in sizes.items()}


def _entries(objects: dict[str, bytes], names: dict[str, str]) -> list[batch_pb2.ArchiveEntry]:
    return [
        batch_pb2.ArchiveEntry(
            name=names[key],
            key=key,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        for key, data in objects.items()
    ]


def test_archive_members_match_the_outputs() -> None:
    objects = _objects({"outputs/a.webp": 3000, "outputs/b.webp": 2_500_000, "outputs/c.png": 0})
    names = {
        "outputs/a.webp": "cat.webp",
        "outputs/b.webp": "dir/dog/small.webp",
        "outputs/c.png": "x.png",
    }
    entries = _entries(objects, names)

    def read(key: str) -> Iterator[bytes]:
        data = objects[key]
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    async def collect() -> list[bytes]:
        return [chunk async for chunk in stream_archive(entries, read)]

    chunks = asyncio.run(collect())
    # Messages of about MESSAGE_BYTES, never the whole archive at once.
    assert len(chunks) >= 2
    assert all(len(c) < MESSAGE_BYTES + 512 * 1024 for c in chunks)
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    assert archive.namelist() == ["cat.webp", "dir/dog/small.webp", "x.png"]
    for entry in entries:
        assert hashlib.sha256(archive.read(entry.name)).hexdigest() == entry.sha256


def test_members_are_read_as_the_archive_is_consumed() -> None:
    reads: list[str] = []

    def read(key: str) -> Iterator[bytes]:
        reads.append(key)
        yield b"x" * 10

    entries = [batch_pb2.ArchiveEntry(name=f"{i}.bin", key=str(i)) for i in range(100)]
    it = zip_chunks(entries, read)
    first = next(it)
    # At most the first member started, not the other 99: memory does not grow with a batch.
    assert len(reads) <= 1
    archive = zipfile.ZipFile(io.BytesIO(first + b"".join(it)))
    assert reads == [str(i) for i in range(100)]
    assert archive.namelist() == [f"{i}.bin" for i in range(100)]
