"""Postgres (gateway.api_keys): create, list, revoke and rotate API keys; look one up.

Only a sha256 of each key is stored, with a short display prefix ("pm_" and 8 characters); the
key itself is returned once, by `create` or `rotate`.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.gateway.auth import Principal, hash_key

KEY_PREFIX = "pm_"
PREFIX_CHARS = len(KEY_PREFIX) + 8


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    tenant_id: str
    prefix: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_to: str | None


@dataclass(frozen=True)
class NewKey:
    """A key as created: its record and the secret, which is never shown again."""

    info: KeyInfo
    secret: str


def _info(row: asyncpg.Record) -> KeyInfo:
    return KeyInfo(
        key_id=row["key_id"],
        tenant_id=row["tenant_id"],
        prefix=row["prefix"],
        name=row["name"],
        scopes=frozenset(row["scopes"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        rotated_to=row["rotated_to"],
    )


_COLUMNS = (
    "key_id, tenant_id, prefix, name, scopes, created_at, last_used_at, expires_at,"
    " revoked_at, rotated_to"
)


class KeyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def principal(self, key_sha256: str) -> Principal | None:
        """The principal of a key that is valid now; records that it was used."""
        row = await self.pool.fetchrow(
            """UPDATE gateway.api_keys SET last_used_at = now()
               WHERE key_sha256=$1 AND revoked_at IS NULL
                 AND (expires_at IS NULL OR expires_at > now())
               RETURNING key_id, tenant_id, scopes, expires_at""",
            key_sha256,
        )
        if row is None:
            return None
        return Principal(
            tenant_id=row["tenant_id"],
            key_id=row["key_id"],
            scopes=frozenset(row["scopes"]),
            expires_at=row["expires_at"],
        )

    async def create(
        self,
        tenant_id: str,
        scopes: Iterable[str],
        name: str = "",
        expires_at: datetime | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> NewKey:
        """Create the tenant if needed and a new key for it."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        if conn is None:
            async with self.pool.acquire() as own, own.transaction():
                return await self._insert(own, tenant_id, scopes, name, expires_at, secret)
        return await self._insert(conn, tenant_id, scopes, name, expires_at, secret)

    async def _insert(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        scopes: Iterable[str],
        name: str,
        expires_at: datetime | None,
        secret: str,
    ) -> NewKey:
        await conn.execute(
            "INSERT INTO gateway.tenants (tenant_id, name) VALUES ($1,$1) ON CONFLICT DO NOTHING",
            tenant_id,
        )
        row = await conn.fetchrow(
            f"""INSERT INTO gateway.api_keys
                  (key_id, tenant_id, key_sha256, prefix, name, scopes, expires_at)
                VALUES ($1,$2,$3,$4,$5,$6,$7) RETURNING {_COLUMNS}""",
            f"key_{uuid.uuid4().hex[:16]}",
            tenant_id,
            hash_key(secret),
            secret[:PREFIX_CHARS],
            name,
            sorted(set(scopes)),
            expires_at,
        )
        return NewKey(info=_info(row), secret=secret)

    async def list(self, tenant_id: str, include_revoked: bool = False) -> list[KeyInfo]:
        rows = await self.pool.fetch(
            f"""SELECT {_COLUMNS} FROM gateway.api_keys
                WHERE tenant_id=$1 AND ($2 OR revoked_at IS NULL)
                ORDER BY created_at, key_id""",
            tenant_id,
            include_revoked,
        )
        return [_info(r) for r in rows]

    async def get(self, tenant_id: str, key_id: str) -> KeyInfo | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM gateway.api_keys WHERE tenant_id=$1 AND key_id=$2",
            tenant_id,
            key_id,
        )
        return None if row is None else _info(row)

    async def revoke(self, tenant_id: str, key_id: str) -> tuple[KeyInfo, str] | None:
        """Revoke a key (idempotent: a revoked key keeps its first revocation time); returns
        it and its sha256 (for cache invalidation), None if the tenant has no such key."""
        row = await self.pool.fetchrow(
            f"""UPDATE gateway.api_keys SET revoked_at = COALESCE(revoked_at, now())
                WHERE tenant_id=$1 AND key_id=$2 RETURNING {_COLUMNS}, key_sha256""",
            tenant_id,
            key_id,
        )
        return None if row is None else (_info(row), row["key_sha256"])

    async def rotate(
        self, tenant_id: str, key_id: str, grace_s: float
    ) -> tuple[NewKey, str] | None:
        """A new key with the old one's name, scopes and expiry; the old one stays valid for
        `grace_s` more seconds (never longer than it already would). Returns the new key and
        the old one's sha256; None if the tenant has no such valid key."""
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(
                f"""SELECT {_COLUMNS}, key_sha256 FROM gateway.api_keys
                    WHERE tenant_id=$1 AND key_id=$2 AND revoked_at IS NULL
                      AND (expires_at IS NULL OR expires_at > now())
                    FOR UPDATE""",
                tenant_id,
                key_id,
            )
            if old is None:
                return None
            new = await self.create(
                tenant_id, old["scopes"], old["name"], old["expires_at"], conn=conn
            )
            await conn.execute(
                """UPDATE gateway.api_keys
                   SET rotated_to=$2,
                       expires_at=LEAST(COALESCE(expires_at, 'infinity'),
                                        now() + make_interval(secs => $3))
                   WHERE key_id=$1""",
                key_id,
                new.info.key_id,
                float(grace_s),
            )
            return new, old["key_sha256"]
