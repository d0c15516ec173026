"""Postgres (gateway schema): tenants, API keys and uploaded images."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from pixmesh.common.v1 import image_pb2
from services.gateway.auth import DEFAULT_SCOPES, Principal
from services.gateway.image_rows import ImageRows
from services.gateway.keys import KeyStore


@dataclass(frozen=True)
class PendingUpload:
    """An upload made through a presigned URL (gateway.uploads)."""

    upload_id: str
    filename: str
    size_bytes: int
    expires_at: datetime
    image_id: str | None  # set once registered


# gateway.tenants columns holding a tenant's limits (migration 0005; quotas.Limits fields).
LIMIT_COLUMNS = ("requests_per_second", "running_jobs", "jobs_per_day", "stored_bytes")


# Transaction-scoped locks on one source's bytes (inputs/<sha256>): uploads share it, the
# deletion of an image takes it alone (see save_image, delete_images).
_SOURCE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('pixmesh-source:' || $1, 0))"
_SOURCE_LOCK_SHARED = (
    "SELECT pg_advisory_xact_lock_shared(hashtextextended('pixmesh-source:' || $1, 0))"
)
_SOURCE_KNOWN = "SELECT EXISTS (SELECT 1 FROM gateway.images WHERE sha256 = $1)"


class GatewayRepository:
    def __init__(self, pool: asyncpg.Pool, images: ImageRows | None = None) -> None:
        self.pool = pool
        # Image rows kept between requests (services/gateway/image_rows.py); None: none kept.
        # Deleting rows (delete_images) does not drop them: the caller announces the deletion
        # (Revocations.announce_images), which drops them here and on every other replica.
        self.images = images

    async def create_key(self, tenant_id: str, name: str = "") -> str:
        """Create the tenant if needed and a new API key for it with the default scopes;
        returns the key (shown once). Key management proper lives in `keys.KeyStore`."""
        new = await KeyStore(self.pool).create(tenant_id, DEFAULT_SCOPES, name)
        return new.secret

    async def principal(self, key_sha256: str) -> Principal | None:
        return await KeyStore(self.pool).principal(key_sha256)

    async def tenant_limits(self, tenant_id: str) -> dict[str, int | None]:
        """The tenant's own limits (None: the deployment's default); all None if unknown."""
        row = await self.pool.fetchrow(
            f"SELECT {', '.join(LIMIT_COLUMNS)} FROM gateway.tenants WHERE tenant_id=$1",
            tenant_id,
        )
        return {c: None if row is None else row[c] for c in LIMIT_COLUMNS}

    async def set_tenant_limits(self, tenant_id: str, limits: dict[str, int | None]) -> None:
        """Set some of a tenant's limits (None: back to the default); creates the tenant."""
        unknown = set(limits) - set(LIMIT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}")
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO gateway.tenants (tenant_id, name) VALUES ($1,$1)"
                " ON CONFLICT DO NOTHING",
                tenant_id,
            )
            for column, value in limits.items():  # names checked against LIMIT_COLUMNS above
                await conn.execute(
                    f"UPDATE gateway.tenants SET {column}=$2 WHERE tenant_id=$1", tenant_id, value
                )

    async def stored_bytes(self, tenant_id: str) -> int:
        """Bytes of the tenant's uploads (its sources; outputs are shared and not counted)."""
        total = await self.pool.fetchval(
            "SELECT COALESCE(SUM(size_bytes), 0) FROM gateway.images WHERE tenant_id=$1",
            tenant_id,
        )
        return int(total)

    async def save_image(
        self,
        tenant_id: str,
        image: image_pb2.Image,
        store: Callable[[bool], Awaitable[None]] | None = None,
    ) -> image_pb2.Image:
        """Record an upload; the same bytes uploaded again return the first record (given the
        orientation if it was recorded before orientations were kept). `store` (putting the
        bytes) runs first, under the source's shared lock, so a deletion of the last other image
        with these bytes (which takes it exclusively) either sees this row or runs before the
        bytes are stored. It is told whether an image row (of any tenant) has these bytes,
        read after the lock is held: when none has, no image's bytes are stored under the key
        and the caller can put them without asking storage first. The row is kept for the
        jobs that follow (`images`)."""
        generation = None if self.images is None else self.images.generation()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_SOURCE_LOCK_SHARED, image.sha256)
            if store is not None:
                # Its own statement, not part of the lock's: a statement reads the rows of
                # when it started, and the lock may have waited for a deletion to commit.
                await store(bool(await conn.fetchval(_SOURCE_KNOWN, image.sha256)))
            saved = await self._save_image(conn, tenant_id, image)
        if self.images is not None and generation is not None:
            self.images.remember(tenant_id, saved, generation)
        return saved

    async def delete_images(
        self,
        tenant_id: str,
        image_ids: Sequence[str],
        delete_sources: Callable[[list[str]], Awaitable[None]],
    ) -> tuple[int, int]:
        """The tenant's image rows, in one transaction: the bytes no other image (of any
        tenant) has left go, all in one `delete_sources(sha256s)` call before the commit (if it
        raises, nothing is deleted). Returns (images deleted, sources deleted); rows another
        pass deleted first are not counted."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "DELETE FROM gateway.images WHERE tenant_id=$1 AND image_id = ANY($2::text[])"
                " RETURNING sha256",
                tenant_id,
                list(image_ids),
            )
            gone = await _unreferenced(conn, {str(r["sha256"]) for r in rows}, delete_sources)
            return len(rows), gone

    async def release_sources(
        self, sha256s: Sequence[str], delete_sources: Callable[[list[str]], Awaitable[None]]
    ) -> int:
        """Sources that no job reads any more (DeleteJobsResponse.released_sources): those no
        image (of any tenant) has go, as in `delete_images`; how many."""
        if not sha256s:
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            return await _unreferenced(conn, set(sha256s), delete_sources)

    async def due_images(
        self, tenant_id: str, created_before: datetime | None, limit: int
    ) -> list[tuple[str, str]]:
        """(image id, sha256) of the tenant's images created before `created_before` (None:
        all), oldest first, at most `limit`."""
        rows = await self.pool.fetch(
            """SELECT image_id, sha256 FROM gateway.images
               WHERE tenant_id=$1 AND ($2::timestamptz IS NULL OR created_at < $2)
               ORDER BY created_at LIMIT $3""",
            tenant_id,
            created_before,
            limit,
        )
        return [(r["image_id"], r["sha256"]) for r in rows]

    async def retention(self) -> list[tuple[str, int | None, int | None]]:
        """Tenants with a retention: (tenant, outputs seconds, sources seconds)."""
        rows = await self.pool.fetch(
            """SELECT tenant_id, retain_outputs_s, retain_sources_s FROM gateway.tenants
               WHERE retain_outputs_s IS NOT NULL OR retain_sources_s IS NOT NULL"""
        )
        return [(r["tenant_id"], r["retain_outputs_s"], r["retain_sources_s"]) for r in rows]

    async def set_retention(
        self, tenant_id: str, outputs_s: int | None, sources_s: int | None
    ) -> None:
        await self.pool.execute(
            """INSERT INTO gateway.tenants (tenant_id, name, retain_outputs_s, retain_sources_s)
               VALUES ($1, $1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE
               SET retain_outputs_s = $2, retain_sources_s = $3""",
            tenant_id,
            outputs_s,
            sources_s,
        )

    async def delete_keys(self, tenant_id: str) -> list[str]:
        """Revoke every key of the tenant; returns their sha256 (for the caches)."""
        rows = await self.pool.fetch(
            """UPDATE gateway.api_keys SET revoked_at = COALESCE(revoked_at, now())
               WHERE tenant_id=$1 RETURNING key_sha256""",
            tenant_id,
        )
        return [r["key_sha256"] for r in rows]

    async def _save_image(
        self, conn: asyncpg.Connection, tenant_id: str, image: image_pb2.Image
    ) -> image_pb2.Image:
        row = await conn.fetchrow(
            """INSERT INTO gateway.images (image_id, tenant_id, sha256, format, width, height,
                 frame_count, size_bytes, content_type, filename, orientation, kind, video)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)
               ON CONFLICT (tenant_id, sha256) DO UPDATE
                 SET orientation = COALESCE(gateway.images.orientation, EXCLUDED.orientation)
               RETURNING *""",
            f"img_{uuid.uuid4().hex}",
            tenant_id,
            image.sha256,
            image.format,
            image.width,
            image.height,
            image.frame_count,
            image.size_bytes,
            image.content_type,
            image.filename,
            image.orientation or None,
            image.kind or None,
            image.video.SerializeToString() if image.HasField("video") else None,
        )
        return _image(row)

    async def get_image(self, tenant_id: str, image_id: str) -> image_pb2.Image | None:
        """The tenant's image, from the kept rows (`images`) when there."""

        async def read() -> image_pb2.Image | None:
            row = await self.pool.fetchrow(
                "SELECT * FROM gateway.images WHERE tenant_id=$1 AND image_id=$2",
                tenant_id,
                image_id,
            )
            return None if row is None else _image(row)

        if self.images is None:
            return await read()
        return await self.images.get(tenant_id, image_id, read)

    # ---- presigned uploads ----------------------------------------------------------------

    async def create_upload(
        self, tenant_id: str, upload_id: str, filename: str, size_bytes: int, expires_at: datetime
    ) -> None:
        await self.pool.execute(
            """INSERT INTO gateway.uploads (upload_id, tenant_id, filename, size_bytes, expires_at)
               VALUES ($1,$2,$3,$4,$5)""",
            upload_id,
            tenant_id,
            filename,
            size_bytes,
            expires_at,
        )

    async def get_upload(
        self, tenant_id: str, upload_id: str, grace_s: float
    ) -> PendingUpload | None:
        """The tenant's upload, None if unknown or past its expiry plus `grace_s`."""
        row = await self.pool.fetchrow(
            """SELECT * FROM gateway.uploads WHERE tenant_id=$1 AND upload_id=$2
                 AND expires_at + make_interval(secs => $3) > now()""",
            tenant_id,
            upload_id,
            float(grace_s),
        )
        if row is None:
            return None
        return PendingUpload(
            upload_id=row["upload_id"],
            filename=row["filename"],
            size_bytes=row["size_bytes"],
            expires_at=row["expires_at"],
            image_id=row["image_id"],
        )

    async def register_upload(self, tenant_id: str, upload_id: str, image_id: str) -> None:
        await self.pool.execute(
            "UPDATE gateway.uploads SET image_id=$3 WHERE tenant_id=$1 AND upload_id=$2",
            tenant_id,
            upload_id,
            image_id,
        )

    async def remove_expired_uploads(
        self,
        grace_s: float,
        limit: int,
        delete_objects: Callable[[list[tuple[str, str]]], Awaitable[None]],
    ) -> int:
        """Remove at most `limit` uploads past their expiry plus `grace_s`, oldest first.

        The rows are locked (SKIP LOCKED) while `delete_objects` removes their staging objects
        and deleted in the same transaction, so gateway replicas cleaning up at once each take
        other rows, and rows whose objects could not be deleted (it raised, or the replica died)
        stay for a later pass. Returns how many were removed."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT tenant_id, upload_id FROM gateway.uploads
                    WHERE expires_at <= now() - make_interval(secs => $1)
                    ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
                float(grace_s),
                limit,
            )
            if not rows:
                return 0
            claimed = [(r["tenant_id"], r["upload_id"]) for r in rows]
            await delete_objects(claimed)
            await conn.execute(
                "DELETE FROM gateway.uploads WHERE upload_id = ANY($1::text[])",
                [upload_id for _, upload_id in claimed],
            )
            return len(claimed)


def _image(row: asyncpg.Record) -> image_pb2.Image:
    image = image_pb2.Image(
        image_id=row["image_id"],
        format=row["format"],
        width=row["width"],
        height=row["height"],
        frame_count=row["frame_count"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        content_type=row["content_type"],
        filename=row["filename"],
        orientation=row["orientation"] or 0,  # NULL: recorded before orientations were
        # NULL: an image recorded before videos were (Image.Kind's default reads as IMAGE).
        kind=image_pb2.Image.Kind.ValueType(row.get("kind") or 0),
    )
    if row.get("video") is not None:
        image.video.ParseFromString(row["video"])
    image.created_at.FromDatetime(row["created_at"])
    return image


async def _unreferenced(
    conn: asyncpg.Connection,
    sha256s: set[str],
    delete_sources: Callable[[list[str]], Awaitable[None]],
) -> int:
    """Under the lock uploads share (a concurrent upload of the same bytes waits, then stores
    them again), `delete_sources` the shas no image row has; how many. In the caller's
    transaction."""
    shas = sorted(sha256s)
    for sha in shas:  # in one order, so two passes cannot deadlock
        await conn.execute(_SOURCE_LOCK, sha)
    shared = {
        r["sha256"]
        for r in await conn.fetch(
            "SELECT DISTINCT sha256 FROM gateway.images WHERE sha256 = ANY($1::text[])", shas
        )
    }
    gone = [sha for sha in shas if sha not in shared]
    if gone:
        await delete_sources(gone)
    return len(gone)
