"""The gateway's part of `orient`: the EXIF orientation recorded at upload (and its migration),
an orient placed before a preset's operations, and the coarse checks when imaging cannot plan."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
import pytest
from PIL import Image

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.gateway import repository
from services.gateway.app import MIGRATIONS
from services.gateway.pipelines import expand, parse_presets
from services.gateway.repository import GatewayRepository
from services.gateway.service import GatewayService, Upload
from services.gateway.settings import GatewaySettings
from services.gateway.validation import check_params
from services.runtime import db
from services.runtime.errors import InvalidArgument

from .fakes import THUMB, Planner, gateway

Op = operations_pb2.Operation
IGNORE = Op(orient=operations_pb2.Orient(mode=operations_pb2.Orient.IGNORE))
GREY = Op(grayscale=operations_pb2.Grayscale())


def jpeg(orientation: int | None, size: tuple[int, int] = (8, 6)) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    Image.new("RGB", size).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


class SavingRepo:
    def __init__(self) -> None:
        self.saved: list[image_pb2.Image] = []

    async def save_image(
        self,
        tenant_id: str,
        image: image_pb2.Image,
        store: Callable[[bool], Awaitable[None]] | None = None,
    ) -> image_pb2.Image:
        if store is not None:
            await store(any(i.sha256 == image.sha256 for i in self.saved))
        self.saved.append(image)
        return image


class Storage:
    async def exists(self, key: str) -> bool:
        return False

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        pass


class Events:
    async def image_uploaded(self, tenant_id: str, image: image_pb2.Image) -> None:
        pass


def uploader(repo: SavingRepo) -> GatewayService:
    return GatewayService(
        GatewaySettings(),
        repo,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # idempotency, jobs, capabilities: unused by uploads
        Storage(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Events(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # planner: unused by uploads
    )


@pytest.mark.parametrize(("orientation", "recorded"), [(6, 6), (3, 3), (1, 1), (None, 1)])
async def test_upload_records_the_orientation(orientation: int | None, recorded: int) -> None:
    repo = SavingRepo()
    image = await uploader(repo).upload("tenant-a", Upload(jpeg(orientation)))
    assert repo.saved[0].orientation == image.orientation == recorded
    # width x height as displayed: the stored 8x6 pixels show as 6x8 for orientation 6.
    expected = (6, 8) if orientation == 6 else (8, 6)
    assert (image.width, image.height) == expected


def row(orientation: int | None) -> dict[str, object]:
    return {
        "image_id": "img_1",
        "format": image_pb2.JPEG,
        "width": 6,
        "height": 8,
        "frame_count": 1,
        "size_bytes": 100,
        "sha256": "ab" * 32,
        "content_type": "image/jpeg",
        "filename": "",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "orientation": orientation,
    }


def test_rows_from_before_the_migration_have_orientation_0() -> None:
    assert repository._image(row(None)).orientation == 0  # type: ignore[arg-type]
    assert repository._image(row(6)).orientation == 6  # type: ignore[arg-type]


def test_an_orient_leading_the_request_goes_before_the_preset() -> None:
    presets = parse_presets({"thumb": THUMB})
    thumb = presets["thumb"]
    assert expand(presets, "thumb", [IGNORE, GREY]) == [IGNORE, *thumb, GREY]
    assert expand(presets, "thumb", [GREY, IGNORE]) == [*thumb, GREY, IGNORE]  # refused later
    assert expand(presets, "", [IGNORE, GREY]) == [IGNORE, GREY]


async def test_create_job_with_a_preset_sends_the_orient_first() -> None:
    planner = Planner()
    await gateway(planner).create_job("tenant-a", "img_1", [IGNORE], "", 3.0, preset="thumb")
    assert planner.seen[0][0] == IGNORE and len(planner.seen[0]) == 3


def test_coarse_checks_refuse_a_misplaced_orient() -> None:
    check_params([IGNORE, GREY], 8192)  # first: fine
    with pytest.raises(InvalidArgument) as caught:
        check_params([GREY, IGNORE], 8192)
    assert [v.field for v in caught.value.violations] == ["operations[1].orient"]
    assert "only as the job's first operation" in caught.value.message
    with pytest.raises(InvalidArgument) as caught:
        check_params([IGNORE], 8192, prefix="renditions[2].")
    assert [v.field for v in caught.value.violations] == ["renditions[2].operations[0].orient"]
    assert "in a rendition" in caught.value.message
    check_params([GREY, IGNORE], 8192, skip_imaging=True)  # imaging's PlanPipeline decides


async def test_create_job_falls_back_to_the_coarse_orient_check() -> None:
    down = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
    )
    service = gateway(Planner(error=down))
    with pytest.raises(InvalidArgument) as caught:
        await service.create_job("tenant-a", "img_1", [GREY, IGNORE], "", 3.0)
    assert [v.field for v in caught.value.violations] == ["operations[1].orient"]


# The repository and its migration against a real Postgres (a database of its own on the
# session's server).


@pytest.fixture(scope="module")
async def pool(
    scratch_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(await scratch_database("gateway_orient_tests"), max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def stored(sha: str, orientation: int = 0) -> image_pb2.Image:
    return image_pb2.Image(
        format=image_pb2.JPEG,
        width=6,
        height=8,
        frame_count=1,
        size_bytes=100,
        sha256=sha,
        content_type="image/jpeg",
        orientation=orientation,
    )


@pytest.mark.integration
async def test_migration_keeps_old_rows_and_the_repository_stores_the_orientation(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # The schema as it was before 0002, with an image recorded then.
    before = tmp_path / "before"
    before.mkdir()
    shutil.copy(MIGRATIONS / "0001_gateway.sql", before)
    assert await db.migrate(pool, "gateway", before) == ["0001_gateway.sql"]
    repo = GatewayRepository(pool)
    # The tenant as 0001 knew it (create_key writes columns of later migrations).
    await pool.execute("INSERT INTO gateway.tenants (tenant_id, name) VALUES ('tenant-a', 'a')")
    old = await pool.fetchrow(
        """INSERT INTO gateway.images (image_id, tenant_id, sha256, format, width, height,
             frame_count, size_bytes, content_type)
           VALUES ('img_old', 'tenant-a', $1, 1, 6, 8, 1, 100, 'image/jpeg') RETURNING *""",
        "0" * 64,
    )
    assert old is not None

    assert (await db.migrate(pool, "gateway", MIGRATIONS))[0] == "0002_image_orientation.sql"
    legacy = await repo.get_image("tenant-a", "img_old")
    assert legacy is not None and legacy.orientation == 0  # NULL: unknown

    saved = await repo.save_image("tenant-a", stored("1" * 64, orientation=6))
    assert saved.orientation == 6
    fetched = await repo.get_image("tenant-a", saved.image_id)
    assert fetched is not None and fetched.orientation == 6
    upright = await repo.save_image("tenant-a", stored("2" * 64, orientation=1))
    assert upright.orientation == 1

    # The same bytes uploaded again: the first record, its orientation filled in if unknown.
    again = await repo.save_image("tenant-a", stored("0" * 64, orientation=6))
    assert (again.image_id, again.orientation) == ("img_old", 6)
    again = await repo.save_image("tenant-a", stored("1" * 64, orientation=3))
    assert (again.image_id, again.orientation) == (saved.image_id, 6)  # never overwritten

    with pytest.raises(asyncpg.CheckViolationError):
        await repo.save_image("tenant-a", stored("3" * 64, orientation=9))
