from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from pixmesh.common.v1 import metadata_pb2
from services.metadata.extract import extract
from services.metadata.service import MetadataService
from services.runtime.errors import InvalidArgument, NotFound

from .images import ascii_, jpeg, tiff


class FakeStore:
    """In-memory MetadataStore: a dict keyed like the table's primary key."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], metadata_pb2.ImageMetadata] = {}
        self.writes = 0

    async def upsert(self, tenant_id: str, md: metadata_pb2.ImageMetadata) -> None:
        self.writes += 1
        copy = metadata_pb2.ImageMetadata()
        copy.CopyFrom(md)
        self.rows[(tenant_id, md.sha256)] = copy

    async def get(self, tenant_id: str, sha256: str) -> metadata_pb2.ImageMetadata | None:
        return self.rows.get((tenant_id, sha256))


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1, thread_name_prefix="test-cpu") as pool:
        yield pool


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


async def test_extracts_on_the_executor_and_stores(
    store: FakeStore, executor: ThreadPoolExecutor
) -> None:
    threads: list[str] = []

    def spy(data: bytes) -> metadata_pb2.ImageMetadata:
        threads.append(threading.current_thread().name)
        return extract(data)

    service = MetadataService(store, executor, extractor=spy)
    data = jpeg(tiff([ascii_(0x010F, "Leica")]))

    md = await service.extract_and_store("tenant-a", data)

    assert md.exif.make == "Leica"
    assert threads and threads[0].startswith("test-cpu")  # never the event loop's thread
    assert store.rows == {("tenant-a", md.sha256): md}


async def test_get_returns_what_was_stored(store: FakeStore, executor: ThreadPoolExecutor) -> None:
    service = MetadataService(store, executor)
    stored = await service.extract_and_store("tenant-a", jpeg(size=(5, 3)))

    # Digests from clients are accepted in any case and with stray whitespace.
    got = await service.get("tenant-a", f" {stored.sha256.upper()} ")

    assert got == stored
    assert (got.width, got.height) == (5, 3)


async def test_get_is_per_tenant(store: FakeStore, executor: ThreadPoolExecutor) -> None:
    service = MetadataService(store, executor)
    stored = await service.extract_and_store("tenant-a", jpeg())

    with pytest.raises(NotFound) as err:
        await service.get("tenant-b", stored.sha256)

    assert err.value.reason == "METADATA_NOT_FOUND"


@pytest.mark.parametrize("digest", ["", "abc", "g" * 64, "a" * 63, "a" * 65])
async def test_get_rejects_malformed_digests(
    store: FakeStore, executor: ThreadPoolExecutor, digest: str
) -> None:
    service = MetadataService(store, executor)

    with pytest.raises(InvalidArgument) as err:
        await service.get("tenant-a", digest)

    assert err.value.reason == "INVALID_SHA256"
    assert [v.field for v in err.value.violations] == ["sha256"]


async def test_corrupt_image_is_rejected_and_nothing_stored(
    store: FakeStore, executor: ThreadPoolExecutor
) -> None:
    service = MetadataService(store, executor)

    with pytest.raises(InvalidArgument) as err:
        await service.extract_and_store("tenant-a", b"\x89PNG\r\n\x1a\n truncated")

    assert err.value.reason == "IMAGE_CORRUPT"
    assert store.writes == 0
