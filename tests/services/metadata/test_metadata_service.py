from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pixmesh.common.v1 import image_pb2, metadata_pb2
from services.metadata import hashes
from services.metadata.extract import extract
from services.metadata.search import Cursor
from services.metadata.service import MetadataService
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.runtime.storage import input_key

from .images import ascii_, dms, jpeg, tiff


class FakeStore:
    """In-memory MetadataStore: a dict keyed like the table's primary key."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], metadata_pb2.ImageMetadata] = {}
        self.image_ids: dict[tuple[str, str], str | None] = {}
        self.writes = 0
        self.uploaded_at: dict[tuple[str, str], datetime | None] = {}
        self.similar_calls: list[tuple[Any, ...]] = []

    async def upsert(
        self,
        tenant_id: str,
        md: metadata_pb2.ImageMetadata,
        image_id: str | None = None,
        uploaded_at: datetime | None = None,
    ) -> None:
        self.writes += 1
        self.uploaded_at[(tenant_id, md.sha256)] = uploaded_at
        copy = metadata_pb2.ImageMetadata()
        copy.CopyFrom(md)
        self.rows[(tenant_id, md.sha256)] = copy
        key = (tenant_id, md.sha256)
        self.image_ids[key] = image_id or self.image_ids.get(key)

    async def get(self, tenant_id: str, sha256: str) -> metadata_pb2.ImageMetadata | None:
        # A copy, like a real read: callers may change what they get.
        row = self.rows.get((tenant_id, sha256))
        return (
            None if row is None else metadata_pb2.ImageMetadata.FromString(row.SerializeToString())
        )

    async def search(
        self,
        tenant_id: str,
        f: metadata_pb2.ImageSearchFilter,
        limit: int,
        after: Cursor | None,
    ) -> list[tuple[metadata_pb2.ImageRecord, Cursor]]:
        # Newest first is insertion order reversed; created_at is faked from the position.
        keys = [k for k in reversed(self.rows) if k[0] == tenant_id]
        out = []
        for position, key in enumerate(keys):
            cursor = Cursor(datetime(2024, 1, 1, tzinfo=UTC) - timedelta(seconds=position), key[1])
            if after is not None and (cursor.created_at, cursor.sha256) >= (
                after.created_at,
                after.sha256,
            ):
                continue
            record = metadata_pb2.ImageRecord(
                image_id=self.image_ids[key] or "", metadata=self.rows[key]
            )  # the constructor copies the message
            out.append((record, cursor))
        return out[:limit]

    async def similar(self, *args: Any) -> list[metadata_pb2.SimilarImage]:
        self.similar_calls.append(args)
        return []


class FakeImages:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    async def get(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise NotFound("object not found", reason="OBJECT_NOT_FOUND") from None


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


def gps_photo() -> bytes:
    block = tiff(
        [ascii_(0x010F, "Apple")],
        gps=[ascii_(1, "N"), dms(2, 48, 51, 2988), ascii_(3, "E"), dms(4, 2, 17, 4020)],
    )
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        b'xmlns:xmp="http://ns.adobe.com/xap/1.0/" exif:GPSLatitude="48,51.498N" '
        b'exif:GPSLongitude="2,17.67E" xmp:Rating="3"/></rdf:RDF></x:xmpmeta>'
    )
    return jpeg(block, xmp=xmp)


def uploaded(data: bytes, image_id: str = "img_1") -> image_pb2.Image:
    md = extract(data)
    return image_pb2.Image(
        image_id=image_id,
        sha256=md.sha256,
        format=md.format,
        width=md.width,
        height=md.height,
        frame_count=1,
        size_bytes=len(data),
    )


async def test_an_upload_is_indexed_under_its_image_id(
    store: FakeStore, executor: ThreadPoolExecutor
) -> None:
    data = jpeg(tiff([ascii_(0x010F, "Leica")]))
    image = uploaded(data, "img_abc")
    upload_time = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    image.created_at.FromDatetime(upload_time)
    service = MetadataService(store, executor, images=FakeImages({input_key(image.sha256): data}))

    await service.index_upload("tenant-a", image)
    await service.index_upload("tenant-a", image)  # redelivered: same row, same content

    assert store.rows[("tenant-a", image.sha256)] == extract(data)
    assert store.image_ids == {("tenant-a", image.sha256): "img_abc"}
    # Searches order by the upload's time, not by when indexing happened to run.
    assert store.uploaded_at == {("tenant-a", image.sha256): upload_time}


async def test_an_unreadable_upload_still_gets_a_record_that_says_why(
    store: FakeStore, executor: ThreadPoolExecutor
) -> None:
    data = b"\xff\xd8\xff" + b"\x00" * 64
    image = image_pb2.Image(
        image_id="img_bad", sha256="ab" * 32, format=image_pb2.JPEG, width=10, height=20
    )
    image.size_bytes = len(data)
    gone = image_pb2.Image()
    gone.CopyFrom(image)
    gone.sha256, gone.image_id = "cd" * 32, "img_gone"
    service = MetadataService(store, executor, images=FakeImages({input_key(image.sha256): data}))

    await service.index_upload("tenant-a", image)
    await service.index_upload("tenant-a", gone)

    md = store.rows[("tenant-a", image.sha256)]
    assert (md.format, md.width, md.height, md.size_bytes) == (image_pb2.JPEG, 10, 20, len(data))
    assert list(md.warnings) == ["image: image could not be read: corrupt or unsupported format"]
    assert list(store.rows[("tenant-a", gone.sha256)].warnings) == [
        "image: the uploaded bytes are no longer in storage"
    ]


async def test_storage_outages_are_retried_not_recorded(
    store: FakeStore, executor: ThreadPoolExecutor
) -> None:
    class Down:
        async def get(self, key: str) -> bytes:
            raise Unavailable("object storage unreachable", reason="STORAGE_ERROR")

    service = MetadataService(store, executor, images=Down())

    with pytest.raises(Unavailable):
        await service.index_upload("tenant-a", uploaded(jpeg()))
    assert store.writes == 0


async def test_job_results_are_linked_to_the_source_image_only_when_they_are_its_bytes(
    store: FakeStore, executor: ThreadPoolExecutor
) -> None:
    service = MetadataService(store, executor)
    data = jpeg()
    source = uploaded(data, "img_src")
    other = uploaded(jpeg(size=(8, 8)), "img_other")

    md = await service.extract_and_store("tenant-a", data, source)
    await service.extract_and_store("tenant-b", data, other)

    assert store.image_ids[("tenant-a", md.sha256)] == "img_src"
    assert store.image_ids[("tenant-b", md.sha256)] is None


async def test_strip_gps_policy_removes_every_position(
    store: FakeStore, executor: ThreadPoolExecutor
) -> None:
    data = gps_photo()
    kept = await MetadataService(store, executor).extract_and_store("t", data)
    assert kept.exif.HasField("gps") and "exif:GPSLatitude" in kept.xmp

    stripped = await MetadataService(store, executor, strip_gps=True).extract_and_store("t", data)

    assert not stripped.exif.HasField("gps")
    assert stripped.exif.make == "Apple"
    assert dict(stripped.xmp) == {"xmp:Rating": "3"}
    assert store.rows[("t", stripped.sha256)] == stripped  # stored without it too


async def test_search_pages_through_everything_once(
    store: FakeStore, executor: ThreadPoolExecutor
) -> None:
    service = MetadataService(store, executor)
    for i in range(5):
        await service.extract_and_store("t", jpeg(size=(10 + i, 10)), None)
    await service.extract_and_store("someone-else", jpeg(size=(99, 99)), None)

    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        images, token = await service.search("t", metadata_pb2.ImageSearchFilter(), 2, token)
        seen += [r.metadata.width for r in images]
        pages += 1
        if not token:
            break

    assert sorted(seen) == [10, 11, 12, 13, 14]
    assert pages == 3


async def test_search_rejects_bad_input_before_the_store(
    store: FakeStore, executor: ThreadPoolExecutor
) -> None:
    service = MetadataService(store, executor)
    partial_box = metadata_pb2.ImageSearchFilter(min_latitude=1.0)

    for call in (
        service.search("t", partial_box, 10, ""),
        service.search("t", metadata_pb2.ImageSearchFilter(), 500, ""),
        service.search("t", metadata_pb2.ImageSearchFilter(), 10, "garbage"),
        service.search("", metadata_pb2.ImageSearchFilter(), 10, ""),
    ):
        with pytest.raises(InvalidArgument):
            await call


async def test_find_similar_queries_by_the_stored_phash(
    store: FakeStore, executor: ThreadPoolExecutor
) -> None:
    service = MetadataService(store, executor)
    md = await service.extract_and_store("t", jpeg(), None)

    await service.find_similar("t", md.sha256, None, 0)
    await service.find_similar("t", md.sha256, 20, 5)

    phash = hashes.from_hex(md.perceptual_hashes.phash)
    (tenant, value, distance, limit, exclude, probes), second = store.similar_calls
    assert (tenant, value, distance, limit, exclude) == ("t", phash, 10, 20, md.sha256)
    assert probes is not None and len(probes) == 4
    assert second[2:5] == (20, 5, md.sha256) and second[5] is None  # wide: a scan


async def test_find_similar_errors(store: FakeStore, executor: ThreadPoolExecutor) -> None:
    service = MetadataService(store, executor)
    header_only = metadata_pb2.ImageMetadata(sha256="ef" * 32, format=image_pb2.PNG)
    await store.upsert("t", header_only, "img_x")

    with pytest.raises(NotFound):
        await service.find_similar("t", "00" * 32, None, 0)
    with pytest.raises(FailedPrecondition) as err:
        await service.find_similar("t", header_only.sha256, None, 0)
    assert err.value.reason == "NO_PERCEPTUAL_HASH"
    with pytest.raises(InvalidArgument):
        await service.find_similar("t", header_only.sha256, 33, 0)


async def test_strip_gps_also_hides_positions_stored_before_it_was_switched_on(
    store: FakeStore, executor: ThreadPoolExecutor
) -> None:
    stored = await MetadataService(store, executor).extract_and_store("t", gps_photo(), None)
    await store.upsert("t", stored, "img_old")
    strict = MetadataService(store, executor, strip_gps=True)

    got = await strict.get("t", stored.sha256)
    (record,), _ = await strict.search("t", metadata_pb2.ImageSearchFilter(), 10, "")
    box = metadata_pb2.ImageSearchFilter(
        min_latitude=48, max_latitude=49, min_longitude=2, max_longitude=3
    )

    assert not got.exif.HasField("gps") and "exif:GPSLatitude" not in got.xmp
    assert not record.metadata.exif.HasField("gps")
    with pytest.raises(FailedPrecondition) as err:
        await strict.search("t", box, 10, "")
    assert err.value.reason == "GPS_DISABLED"
