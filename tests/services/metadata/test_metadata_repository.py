"""MetadataRepository against a real Postgres 18, with the real migrations: a database of its
own on the session's server (tests/conftest.py `scratch_database`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from pixmesh.common.v1 import image_pb2, metadata_pb2
from services.metadata import hashes, search
from services.metadata.extract import extract
from services.metadata.repository import MIGRATIONS, SCHEMA, MetadataRepository
from services.runtime import db

from .images import ascii_, dms, jpeg, rational, short, tiff

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def pool(
    scratch_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(await scratch_database("metadata_tests"), max_size=4)
    try:
        await db.migrate(pool, SCHEMA, MIGRATIONS)
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> MetadataRepository:
    return MetadataRepository(pool)


def photo(make: str = "Canon") -> metadata_pb2.ImageMetadata:
    block = tiff(
        [ascii_(0x010F, make), ascii_(0x0110, "EOS R5"), short(0x0112, 6)],
        exif=[
            ascii_(0x9003, "2024:05:01 12:34:56"),
            ascii_(0x9011, "+02:00"),
            rational(0x829A, (1, 250)),
        ],
        gps=[ascii_(1, "S"), dms(2, 33, 51, 3564), ascii_(3, "W"), dms(4, 151, 12, 3600)],
    )
    return extract(jpeg(block, size=(64, 48)))


async def row(pool: asyncpg.Pool, tenant: str, sha256: str) -> asyncpg.Record:
    record = await pool.fetchrow(
        "SELECT * FROM metadata.image_metadata WHERE tenant_id = $1 AND sha256 = $2",
        tenant,
        sha256,
    )
    assert record is not None
    return record


async def test_migrations_are_applied_once(pool: asyncpg.Pool) -> None:
    assert await db.migrate(pool, SCHEMA, MIGRATIONS) == []
    names = await pool.fetch("SELECT name FROM metadata.schema_migrations ORDER BY name")
    assert [r["name"] for r in names] == sorted(p.name for p in Path(MIGRATIONS).glob("*.sql"))


async def test_upsert_then_get_round_trips(repo: MetadataRepository, pool: asyncpg.Pool) -> None:
    md = photo()

    await repo.upsert("t-roundtrip", md)
    got = await repo.get("t-roundtrip", md.sha256)

    assert got == md
    record = await row(pool, "t-roundtrip", md.sha256)
    assert (record["format"], record["width"], record["height"]) == ("JPEG", 64, 48)
    assert (record["make"], record["model"], record["orientation"]) == ("Canon", "EOS R5", 6)
    assert record["date_taken"] == datetime(2024, 5, 1, 12, 34, 56)
    assert record["date_taken_offset"] == "+02:00"
    assert record["gps_latitude"] == pytest.approx(-(33 + 51 / 60 + 35.64 / 3600))
    assert record["gps_longitude"] == pytest.approx(-(151 + 12 / 60 + 36 / 3600))
    assert record["size_bytes"] == md.size_bytes


async def test_upsert_twice_is_idempotent(repo: MetadataRepository, pool: asyncpg.Pool) -> None:
    md = photo()
    await repo.upsert("t-twice", md)
    first = await row(pool, "t-twice", md.sha256)

    await repo.upsert("t-twice", md)

    again = await row(pool, "t-twice", md.sha256)
    count = await pool.fetchval(
        "SELECT count(*) FROM metadata.image_metadata WHERE tenant_id = 't-twice'"
    )
    assert count == 1
    # Same document: the row is left alone, so updated_at still means "last changed".
    assert (again["created_at"], again["updated_at"]) == (first["created_at"], first["updated_at"])
    assert await repo.get("t-twice", md.sha256) == md


async def test_upsert_with_new_content_replaces_the_row(
    repo: MetadataRepository, pool: asyncpg.Pool
) -> None:
    old = photo()
    await repo.upsert("t-replace", old)
    first = await row(pool, "t-replace", old.sha256)
    # The same image read by a newer extractor: same key, different document.
    new = metadata_pb2.ImageMetadata()
    new.CopyFrom(old)
    new.exif.make = "Canon Inc."
    new.exif.ClearField("gps")
    new.warnings.append("exif.gps: malformed GPSLatitude")
    await asyncio.sleep(0.01)

    await repo.upsert("t-replace", new)

    again = await row(pool, "t-replace", old.sha256)
    assert await repo.get("t-replace", old.sha256) == new
    assert again["make"] == "Canon Inc."
    assert again["gps_latitude"] is None and again["gps_longitude"] is None
    assert again["created_at"] == first["created_at"]
    assert again["updated_at"] > first["updated_at"]


async def test_rows_without_protobuf_bytes_are_read_from_the_json(
    repo: MetadataRepository, pool: asyncpg.Pool
) -> None:
    md = photo()
    await repo.upsert("t-legacy-doc", md, "img_legacy_doc")
    # A row written before migration 0002 has only the JSON document.
    await pool.execute(
        "UPDATE metadata.image_metadata SET doc_pb = NULL WHERE tenant_id = 't-legacy-doc'"
    )

    assert await repo.get("t-legacy-doc", md.sha256) == md
    ((found, _),) = await repo.search("t-legacy-doc", metadata_pb2.ImageSearchFilter(), 10, None)
    assert found.metadata == md


async def test_rows_are_per_tenant(repo: MetadataRepository) -> None:
    md = photo()

    await repo.upsert("t-owner", md)

    assert await repo.get("t-owner", md.sha256) == md
    assert await repo.get("t-other", md.sha256) is None


async def test_missing_row_is_none(repo: MetadataRepository) -> None:
    assert await repo.get("t-none", "0" * 64) is None


async def test_minimal_metadata_without_exif(repo: MetadataRepository, pool: asyncpg.Pool) -> None:
    md = extract(jpeg())

    await repo.upsert("t-bare", md)

    assert await repo.get("t-bare", md.sha256) == md
    record = await row(pool, "t-bare", md.sha256)
    assert record["make"] is None and record["date_taken"] is None


async def test_replaced_text_survives_the_database(repo: MetadataRepository) -> None:
    # NUL-free and valid UTF-8 after extraction, so both text columns and jsonb accept it.
    md = extract(jpeg(tiff([ascii_(0x010F, b"Ca\xff\x00non\x00")])))
    assert md.exif.make == "Ca\ufffd non"

    await repo.upsert("t-text", md)

    assert await repo.get("t-text", md.sha256) == md


# ---- search and similarity ------------------------------------------------------------------


def record(
    sha_seed: int,
    *,
    make: str | None = None,
    model: str | None = None,
    taken: datetime | None = None,
    gps: tuple[float, float] | None = None,
    size: tuple[int, int] = (640, 480),
    fmt: int = image_pb2.JPEG,
    phash: int | None = None,
) -> metadata_pb2.ImageMetadata:
    """Metadata built directly (no pixels), so each test states exactly what it searches."""
    md = metadata_pb2.ImageMetadata(
        sha256=hashlib.sha256(str(sha_seed).encode()).hexdigest(),
        format=fmt,  # type: ignore[arg-type]
        width=size[0],
        height=size[1],
        mode="RGB",
        frame_count=1,
        size_bytes=1000,
    )
    if make:
        md.exif.make = make
    if model:
        md.exif.model = model
    if taken:
        md.exif.date_taken.FromDatetime(taken)
    if gps:
        md.exif.gps.latitude, md.exif.gps.longitude = gps
    if phash is not None:
        md.perceptual_hashes.phash = hashes.to_hex(phash)
    return md


async def store_all(
    repo: MetadataRepository, tenant: str, records: list[metadata_pb2.ImageMetadata]
) -> dict[str, str]:
    """Upsert each with image id img_<index>; returns sha256 -> image id."""
    ids = {}
    for i, md in enumerate(records):
        ids[md.sha256] = f"img_{tenant}_{i}"
        await repo.upsert(tenant, md, ids[md.sha256])
    return ids


async def found(repo: MetadataRepository, tenant: str, **fields: object) -> set[str]:
    f = metadata_pb2.ImageSearchFilter(**fields)  # type: ignore[arg-type]
    return {r.image_id for r, _ in await repo.search(tenant, f, 100, None)}


async def test_search_filters(repo: MetadataRepository) -> None:
    t = "t-search"
    ids = await store_all(
        repo,
        t,
        [
            record(1, make="Canon", model="EOS R5", taken=datetime(2021, 6, 1), gps=(48.85, 2.29)),
            record(2, make="canon", model="EOS R6", taken=datetime(2022, 1, 1), size=(4000, 3000)),
            record(3, make="Nikon", gps=(-33.86, 151.21), fmt=image_pb2.PNG, size=(100, 2000)),
            record(4, gps=(10.0, 179.5), fmt=image_pb2.WEBP),
            record(5, gps=(10.0, -179.5)),
        ],
    )
    by_seed = dict(enumerate(ids.values(), start=1))

    assert await found(repo, t, camera_make="CANON") == {by_seed[1], by_seed[2]}
    assert await found(repo, t, camera_make="canon", camera_model="eos r6") == {by_seed[2]}
    after = metadata_pb2.ImageSearchFilter()
    after.taken_after.FromDatetime(datetime(2021, 6, 1))
    after.taken_before.FromDatetime(datetime(2022, 1, 1))
    assert {r.image_id for r, _ in await repo.search(t, after, 10, None)} == {by_seed[1]}
    assert await found(
        repo, t, min_latitude=40, max_latitude=50, min_longitude=0, max_longitude=10
    ) == {by_seed[1]}
    # Across the antimeridian: 170E .. 170W.
    assert await found(
        repo, t, min_latitude=0, max_latitude=20, min_longitude=170, max_longitude=-170
    ) == {by_seed[4], by_seed[5]}
    assert await found(repo, t, min_width=1000) == {by_seed[2]}
    assert await found(repo, t, max_width=640, min_height=480, max_height=480) == {
        by_seed[1],
        by_seed[4],
        by_seed[5],
    }
    assert await found(repo, t, formats=[image_pb2.PNG, image_pb2.WEBP]) == {
        by_seed[3],
        by_seed[4],
    }
    assert len(await found(repo, t)) == 5


async def test_search_pages_newest_first_without_gaps(repo: MetadataRepository) -> None:
    t = "t-pages"
    ids = await store_all(repo, t, [record(100 + i) for i in range(7)])

    pages: list[list[str]] = []
    after = None
    while True:
        rows = await repo.search(t, metadata_pb2.ImageSearchFilter(), 3, after)
        if not rows:
            break
        pages.append([r.image_id for r, _ in rows])
        after = rows[-1][1]

    assert [len(p) for p in pages] == [3, 3, 1]
    flat = [i for p in pages for i in p]
    assert sorted(flat) == sorted(ids.values())
    assert flat[0] == f"img_{t}_6"  # newest first


async def test_search_orders_by_upload_time_not_by_indexing_order(
    repo: MetadataRepository,
) -> None:
    t = "t-upload-order"
    first, second, third = record(400), record(401), record(402)
    day = datetime(2026, 5, 1, tzinfo=UTC)
    # Indexed out of order (concurrent consumers), then one redelivered.
    await repo.upsert(t, third, "img_3", day + timedelta(seconds=3))
    await repo.upsert(t, first, "img_1", day + timedelta(seconds=1))
    await repo.upsert(t, second, "img_2", day + timedelta(seconds=2))
    await repo.upsert(t, third, "img_3", day + timedelta(seconds=3))
    # A write that does not know the upload (an extract_metadata stage) keeps the time.
    await repo.upsert(t, first)

    rows = await repo.search(t, metadata_pb2.ImageSearchFilter(), 10, None)
    assert [r.image_id for r, _ in rows] == ["img_3", "img_2", "img_1"]
    assert rows[-1][1].created_at == day + timedelta(seconds=1)


async def test_search_never_returns_rows_without_an_image_id(repo: MetadataRepository) -> None:
    await repo.upsert("t-legacy", record(200))

    assert await found(repo, "t-legacy") == set()
    # A later write with the id links the row; one without keeps the link.
    await repo.upsert("t-legacy", record(200), "img_linked")
    await repo.upsert("t-legacy", record(200))
    assert await found(repo, "t-legacy") == {"img_linked"}


async def test_similar_finds_near_hashes_nearest_first(repo: MetadataRepository) -> None:
    t = "t-similar"
    base = 0x95515145EF14353F
    near1, near5, far = base ^ 0b1, base ^ 0b11111 << 20, base ^ (2**64 - 1)
    ids = await store_all(
        repo,
        t,
        [
            record(300, phash=base),
            record(301, phash=near1),
            record(302, phash=near5),
            record(303, phash=far),
            record(304),  # no hash: never a match
        ],
    )
    await store_all(repo, "t-similar-other", [record(305, phash=base)])
    query_sha = record(300).sha256

    for probes in (search.band_probes(base, 10), None):
        matches = await repo.similar(t, base, 10, 20, query_sha, probes)
        assert [(m.image_id, m.distance) for m in matches] == [
            (ids[record(301).sha256], 1),
            (ids[record(302).sha256], 5),
        ]
        assert matches[0].metadata.perceptual_hashes.phash == hashes.to_hex(near1)

    narrow = await repo.similar(t, base, 3, 20, query_sha, search.band_probes(base, 3))
    assert [m.distance for m in narrow] == [1]
    limited = await repo.similar(t, base, 64, 1, query_sha, None)
    assert [m.distance for m in limited] == [1]


async def test_similar_probes_agree_with_a_scan_on_random_hashes(repo: MetadataRepository) -> None:
    t = "t-similar-random"
    rng = random.Random(7)
    values = [rng.getrandbits(64) for _ in range(300)]
    # Plant neighbours of the first hash at every distance up to 12.
    for d in range(1, 13):
        flipped = values[0]
        for bit in rng.sample(range(64), d):
            flipped ^= 1 << bit
        values.append(flipped)
    await store_all(repo, t, [record(1000 + i, phash=v) for i, v in enumerate(values)])
    query_sha = record(1000).sha256

    for distance in (0, 4, 8, 11, 12):
        probed = await repo.similar(
            t, values[0], distance, 100, query_sha, search.band_probes(values[0], distance)
        )
        scanned = await repo.similar(t, values[0], distance, 100, query_sha, None)
        assert [m.image_id for m in probed] == [m.image_id for m in scanned]
        assert [m.distance for m in probed] == list(range(1, distance + 1))
