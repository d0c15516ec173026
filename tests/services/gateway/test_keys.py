"""API keys against the real Postgres: scopes (and the migration of older keys), expiry,
revocation, rotation with a grace period; the authenticator's cache and its invalidation."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.gateway.app import MIGRATIONS
from services.gateway.auth import (
    ADMIN,
    DEFAULT_SCOPES,
    READ,
    SCOPES,
    WRITE,
    Authenticator,
    Principal,
    hash_key,
    parse_scopes,
    require_scope,
)
from services.gateway.keys import KeyStore
from services.runtime import db
from services.runtime.errors import PermissionDenied, Unauthenticated

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def pool(scratch_database: Callable[[str], Awaitable[str]]) -> AsyncIterator[asyncpg.Pool]:
    url = await scratch_database("gateway_keys_test")
    pool = await db.create_pool(url, max_size=4)
    await db.migrate(pool, "gateway", MIGRATIONS)
    yield pool
    await pool.close()


def _bearer(secret: str) -> str:
    return f"Bearer {secret}"


async def test_keys_from_before_scopes_keep_every_scope(
    scratch_database: Callable[[str], Awaitable[str]], tmp_path: Path
) -> None:
    url = await scratch_database("gateway_keys_migration_test")
    old = tmp_path / "migrations"
    old.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql"))[:3]:  # 0001..0003: no scopes yet
        shutil.copy(path, old / path.name)
    pool = await db.create_pool(url, max_size=1)
    try:
        await db.migrate(pool, "gateway", old)
        await pool.execute("INSERT INTO gateway.tenants (tenant_id, name) VALUES ('t','t')")
        await pool.execute(
            "INSERT INTO gateway.api_keys (key_id, tenant_id, key_sha256) VALUES ('k','t',$1)",
            hash_key("pm_old"),
        )
        assert "0004_key_lifecycle.sql" in await db.migrate(pool, "gateway", MIGRATIONS)
        principal = await KeyStore(pool).principal(hash_key("pm_old"))
        assert principal == Principal("t", "k", SCOPES)
    finally:
        await pool.close()


async def test_create_list_and_scopes(pool: asyncpg.Pool) -> None:
    store, tenant = KeyStore(pool), f"t-{uuid.uuid4().hex[:8]}"
    reader = await store.create(tenant, {READ}, "ci reader")
    default = await store.create(tenant, DEFAULT_SCOPES)
    assert reader.secret.startswith("pm_") and len(reader.secret) > 40
    assert reader.info.prefix == reader.secret[:11]
    # Only the hash is stored.
    stored = await pool.fetchval(
        "SELECT key_sha256 FROM gateway.api_keys WHERE key_id=$1", reader.info.key_id
    )
    assert stored == hash_key(reader.secret) and reader.secret not in stored
    listed = await store.list(tenant)
    assert [k.key_id for k in listed] == [reader.info.key_id, default.info.key_id]
    assert listed[0].name == "ci reader" and listed[0].scopes == {READ}
    assert listed[1].scopes == {READ, WRITE}
    assert await store.list(f"{tenant}-other") == []
    auth = Authenticator(store.principal, ttl_s=30)
    principal = await auth.authenticate(_bearer(reader.secret))
    assert principal.tenant_id == tenant and require_scope(principal, READ) is principal
    with pytest.raises(PermissionDenied) as err:
        require_scope(principal, WRITE)
    assert err.value.reason == "SCOPE_MISSING" and err.value.metadata["scope"] == WRITE
    used = await store.get(tenant, reader.info.key_id)
    assert used is not None and used.last_used_at is not None


async def test_expired_and_revoked_keys_fail(pool: asyncpg.Pool) -> None:
    store, tenant = KeyStore(pool), f"t-{uuid.uuid4().hex[:8]}"
    expired = await store.create(tenant, {READ}, expires_at=datetime.now(UTC) - timedelta(1))
    auth = Authenticator(store.principal, ttl_s=30)
    with pytest.raises(Unauthenticated) as err:
        await auth.authenticate(_bearer(expired.secret))
    assert err.value.reason == "API_KEY_INVALID"

    live = await store.create(tenant, {READ, ADMIN})
    await auth.authenticate(_bearer(live.secret))  # cached now
    revoked = await store.revoke(tenant, live.info.key_id)
    assert revoked is not None and revoked[1] == hash_key(live.secret)
    assert await store.revoke(f"{tenant}-other", live.info.key_id) is None
    # The cache still answers until it is told...
    assert (await auth.authenticate(_bearer(live.secret))).key_id == live.info.key_id
    auth.invalidate(revoked[1])
    with pytest.raises(Unauthenticated):
        await auth.authenticate(_bearer(live.secret))
    again = await store.revoke(tenant, live.info.key_id)
    assert again is not None and again[0].revoked_at == revoked[0].revoked_at  # idempotent


async def test_rotation_keeps_the_old_key_for_the_grace_period(pool: asyncpg.Pool) -> None:
    store, tenant = KeyStore(pool), f"t-{uuid.uuid4().hex[:8]}"
    old = await store.create(tenant, {READ, WRITE}, "deploy")
    rotated = await store.rotate(tenant, old.info.key_id, grace_s=1.0)
    assert rotated is not None
    new, old_hash = rotated
    assert old_hash == hash_key(old.secret)
    assert new.info.scopes == {READ, WRITE} and new.info.name == "deploy"
    auth = Authenticator(store.principal, ttl_s=30)
    assert (await auth.authenticate(_bearer(old.secret))).key_id == old.info.key_id
    assert (await auth.authenticate(_bearer(new.secret))).key_id == new.info.key_id
    await asyncio.sleep(1.2)
    # The cache keeps a key no longer than its expiry.
    with pytest.raises(Unauthenticated):
        await auth.authenticate(_bearer(old.secret))
    assert (await auth.authenticate(_bearer(new.secret))).key_id == new.info.key_id
    info = await store.get(tenant, old.info.key_id)
    assert info is not None and info.rotated_to == new.info.key_id
    # A key past its grace period cannot be rotated again.
    assert await store.rotate(tenant, old.info.key_id, grace_s=60) is None


def test_parse_scopes() -> None:
    assert parse_scopes([]) == DEFAULT_SCOPES
    assert parse_scopes(["Read", " admin "]) == {READ, ADMIN}
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes(["root"])


async def test_missing_or_malformed_header() -> None:
    async def never(digest: str) -> Principal | None:
        raise AssertionError("no lookup without a key")

    auth = Authenticator(never, ttl_s=30)
    for header in (None, "", "Basic abc", "Bearer  "):
        with pytest.raises(Unauthenticated) as err:
            await auth.authenticate(header)
        assert err.value.reason == "API_KEY_MISSING"
