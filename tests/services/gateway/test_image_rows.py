"""The image rows a gateway keeps between requests (services/gateway/image_rows.py): a kept row
saves the read; a deleted row is never served, whether the deletion was made here, announced by
another replica on the real NATS, or overtook a read in progress; nothing is kept while notices
cannot be heard, and everything kept goes after a reconnection; rows whose orientation may still
change are not kept; entries end after the TTL and are bounded in number."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import nats
import pytest

from pixmesh.common.v1 import image_pb2
from services.gateway.auth import Authenticator
from services.gateway.image_rows import ImageRows
from services.gateway.repository import GatewayRepository
from services.gateway.revocations import Revocations
from tests.services.gateway.fakes import Clock


class Rows:
    """The images table: counts the reads that reached it."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], image_pb2.Image] = {}
        self.reads = 0

    def add(self, tenant: str, image_id: str, orientation: int = 1) -> None:
        self.rows[tenant, image_id] = image_pb2.Image(
            image_id=image_id, sha256="ab" * 32, width=64, height=48, orientation=orientation
        )

    def reader(self, tenant: str, image_id: str) -> Any:
        async def read() -> image_pb2.Image | None:
            self.reads += 1
            row = self.rows.get((tenant, image_id))
            return None if row is None else image_pb2.Image.FromString(row.SerializeToString())

        return read


def hearing(rows: ImageRows, heard: list[bool] | None = None) -> ImageRows:
    rows.hear_with(lambda: heard[0] if heard else True)
    return rows


async def test_a_kept_row_saves_the_read_and_is_the_callers_own_copy(clock: Clock) -> None:
    table, rows = Rows(), hearing(ImageRows(ttl_s=30, timer=clock))
    table.add("t", "img_1")
    first = await rows.get("t", "img_1", table.reader("t", "img_1"))
    second = await rows.get("t", "img_1", table.reader("t", "img_1"))
    assert table.reads == 1
    assert first == second == table.rows["t", "img_1"]
    second.filename = "changed by the caller"
    third = await rows.get("t", "img_1", table.reader("t", "img_1"))
    assert third.filename == "" and table.reads == 1


async def test_another_tenant_is_not_served_a_kept_row(clock: Clock) -> None:
    table, rows = Rows(), hearing(ImageRows(ttl_s=30, timer=clock))
    table.add("t", "img_1")
    await rows.get("t", "img_1", table.reader("t", "img_1"))
    assert await rows.get("u", "img_1", table.reader("u", "img_1")) is None
    assert table.reads == 2


async def test_a_deleted_row_is_read_again(clock: Clock) -> None:
    table, rows = Rows(), hearing(ImageRows(ttl_s=30, timer=clock))
    table.add("t", "img_1")
    table.add("t", "img_2")
    for image_id in ("img_1", "img_2"):
        await rows.get("t", image_id, table.reader("t", image_id))
    del table.rows["t", "img_1"]
    rows.invalidate(["img_1"])
    assert await rows.get("t", "img_1", table.reader("t", "img_1")) is None
    assert await rows.get("t", "img_2", table.reader("t", "img_2")) is not None
    assert table.reads == 3  # img_2 still kept
    rows.invalidate()
    await rows.get("t", "img_2", table.reader("t", "img_2"))
    assert table.reads == 4


async def test_a_read_that_a_deletion_overtook_is_not_kept(clock: Clock) -> None:
    """The SELECT saw the row; the deletion's notice arrived before it answered."""
    table, rows = Rows(), hearing(ImageRows(ttl_s=30, timer=clock))
    table.add("t", "img_1")
    stale = table.reader("t", "img_1")

    async def overtaken() -> image_pb2.Image | None:
        row = await stale()
        del table.rows["t", "img_1"]
        rows.invalidate(["img_1"])  # the notice, while the row is on its way
        return row

    assert await rows.get("t", "img_1", overtaken) is not None  # as the SELECT answered
    assert await rows.get("t", "img_1", table.reader("t", "img_1")) is None
    assert len(rows) == 0


async def test_nothing_is_kept_while_notices_are_not_heard(clock: Clock) -> None:
    table, heard = Rows(), [False]
    rows = hearing(ImageRows(ttl_s=30, timer=clock), heard)
    table.add("t", "img_1")
    await rows.get("t", "img_1", table.reader("t", "img_1"))
    await rows.get("t", "img_1", table.reader("t", "img_1"))
    assert table.reads == 2 and len(rows) == 0
    heard[0] = True
    await rows.get("t", "img_1", table.reader("t", "img_1"))
    await rows.get("t", "img_1", table.reader("t", "img_1"))
    assert table.reads == 3
    heard[0] = False  # disconnected: a kept row is not served
    await rows.get("t", "img_1", table.reader("t", "img_1"))
    assert table.reads == 4
    # A new ImageRows keeps nothing until someone says notices are heard.
    deaf = ImageRows(ttl_s=30, timer=clock)
    await deaf.get("t", "img_1", table.reader("t", "img_1"))
    assert len(deaf) == 0


async def test_a_row_without_orientation_is_not_kept(clock: Clock) -> None:
    """Recorded before orientations were: a later upload of the same bytes fills it in."""
    table, rows = Rows(), hearing(ImageRows(ttl_s=30, timer=clock))
    table.add("t", "img_1", orientation=0)
    await rows.get("t", "img_1", table.reader("t", "img_1"))
    await rows.get("t", "img_1", table.reader("t", "img_1"))
    assert table.reads == 2


async def test_rows_end_after_the_ttl_and_are_bounded(clock: Clock) -> None:
    table, rows = Rows(), hearing(ImageRows(ttl_s=30, maxsize=2, timer=clock))
    for image_id in ("img_1", "img_2", "img_3"):
        table.add("t", image_id)
        await rows.get("t", image_id, table.reader("t", image_id))
    assert len(rows) == 2
    clock.now += 31
    await rows.get("t", "img_3", table.reader("t", "img_3"))
    assert table.reads == 4
    off = hearing(ImageRows(ttl_s=0, timer=clock))
    await off.get("t", "img_3", table.reader("t", "img_3"))
    await off.get("t", "img_3", table.reader("t", "img_3"))
    assert table.reads == 6


class Nats:
    """What Revocations.listening reads of the NATS client."""

    def __init__(self) -> None:
        self.stats = {"reconnects": 0}
        self.is_connected = True


def test_listening_needs_the_subscription_and_the_connection_and_forgets_on_reconnection() -> None:
    nc, rows = Nats(), ImageRows(ttl_s=30)
    revocations = Revocations(nc, Authenticator(lambda d: None, ttl_s=30), rows)
    assert not revocations.listening()  # not subscribed yet
    revocations._subscribed = True
    assert revocations.listening()
    rows.remember("t", image_pb2.Image(image_id="img_1", orientation=1), rows.generation())
    assert len(rows) == 1
    nc.is_connected = False
    assert not revocations.listening()
    nc.is_connected, nc.stats["reconnects"] = True, 1
    generation = rows.generation()
    assert revocations.listening()
    assert len(rows) == 0  # notices may have been missed while away
    assert rows.generation() != generation  # a read begun before is not kept either


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


@pytest.mark.integration
async def test_a_deletion_notice_on_nats_drops_the_row_on_another_replica(nats_url: str) -> None:
    table = Rows()
    table.add("t", "img_1")
    here, there = ImageRows(ttl_s=300), ImageRows(ttl_s=300)
    nc_here, nc_there = await nats.connect(nats_url), await nats.connect(nats_url)
    stop = asyncio.Event()
    replicas = [
        Revocations(nc, Authenticator(lambda d: None, ttl_s=30), rows)
        for nc, rows in ((nc_here, here), (nc_there, there))
    ]
    runs = [asyncio.create_task(r.run(stop)) for r in replicas]
    try:
        await until(lambda: all(r.listening() for r in replicas))
        await there.get("t", "img_1", table.reader("t", "img_1"))
        await there.get("t", "img_1", table.reader("t", "img_1"))
        assert table.reads == 1  # kept on the other replica
        del table.rows["t", "img_1"]
        await replicas[0].announce_images(["img_0", "img_1"])
        await until(lambda: len(there) == 0)
        assert await there.get("t", "img_1", table.reader("t", "img_1")) is None
    finally:
        stop.set()
        await asyncio.gather(*runs)
        await nc_here.close()
        await nc_there.close()


@pytest.mark.integration
async def test_the_repository_keeps_what_it_saved_and_reads(gateway_pool: asyncpg.Pool) -> None:
    """On the real Postgres: an upload's row is kept, GetImage's row is the stored one, and a
    deleted row, once announced, is not served."""
    rows = hearing(ImageRows(ttl_s=30))
    repo = GatewayRepository(gateway_pool, rows)
    tenant = f"rows-{uuid.uuid4().hex[:8]}"
    await repo.set_tenant_limits(tenant, {})  # creates the tenant
    image = image_pb2.Image(
        sha256=uuid.uuid4().hex * 2, format="JPEG", width=64, height=48, frame_count=1,
        size_bytes=1000, content_type="image/jpeg", filename="a.jpg", orientation=1,
    )  # fmt: skip
    saved = await repo.save_image(tenant, image)
    assert len(rows) == 1
    uncached = await GatewayRepository(gateway_pool).get_image(tenant, saved.image_id)
    assert await repo.get_image(tenant, saved.image_id) == uncached == saved

    async def no_bytes(shas: list[str]) -> None:
        return None

    assert await repo.delete_images(tenant, [saved.image_id], no_bytes) == (1, 1)
    rows.invalidate([saved.image_id])  # what Deletion's announcement does here
    assert await repo.get_image(tenant, saved.image_id) is None
