"""Key management for a tenant's admins: create (the secret shown once), list, revoke, rotate.

Revocation and rotation are announced to every gateway replica (`Revocations`), so a revoked key
fails everywhere within a second; a rotated key's cached principal is dropped too, so its new
expiry (the end of the grace period) applies at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2

from pixmesh.gateway.v1 import gateway_pb2 as pb
from services.gateway.auth import parse_scopes
from services.gateway.keys import KeyInfo, KeyStore
from services.runtime.errors import NotFound, invalid

# RotateApiKey without a grace period: the old key works one more day.
DEFAULT_GRACE_S = 24 * 3600.0
MAX_GRACE_S = 30 * 24 * 3600.0

Announce = Callable[[str], Awaitable[None]]


def key_not_found(key_id: str) -> NotFound:
    return NotFound(
        message=f"API key {key_id} not found (unknown, expired or another tenant's)",
        reason="API_KEY_NOT_FOUND",
    )


def to_proto(info: KeyInfo) -> pb.ApiKey:
    key = pb.ApiKey(
        key_id=info.key_id,
        prefix=info.prefix,
        name=info.name,
        scopes=sorted(info.scopes),
        rotated_to=info.rotated_to or "",
    )
    key.created_at.FromDatetime(info.created_at)
    for field, value in (
        ("last_used_at", info.last_used_at),
        ("expires_at", info.expires_at),
        ("revoked_at", info.revoked_at),
    ):
        if value is not None:
            getattr(key, field).FromDatetime(value)
    return key


def _seconds(field: str, value: duration_pb2.Duration, high: float) -> float:
    seconds = value.ToTimedelta().total_seconds()
    if not 0 <= seconds <= high:
        raise invalid(field, f"must be between 0 and {high:.0f} seconds")
    return seconds


class KeyAdmin:
    def __init__(self, store: KeyStore, announce: Announce) -> None:
        self.store = store
        self.announce = announce

    async def create(
        self, tenant_id: str, name: str, scopes: Iterable[str], ttl: duration_pb2.Duration | None
    ) -> pb.CreateApiKeyResponse:
        try:
            granted = parse_scopes(scopes)
        except ValueError as exc:
            raise invalid("scopes", str(exc)) from None
        if len(name) > 200:
            raise invalid("name", "at most 200 characters")
        expires = None
        if ttl is not None:
            seconds = _seconds("ttl", ttl, 10 * 365 * 24 * 3600.0)
            if seconds == 0:
                raise invalid(
                    "ttl", "must be positive (leave it unset for a key that never expires)"
                )
            expires = datetime.now(UTC) + timedelta(seconds=seconds)
        new = await self.store.create(tenant_id, granted, name, expires)
        return pb.CreateApiKeyResponse(key=to_proto(new.info), secret=new.secret)

    async def list(self, tenant_id: str, include_revoked: bool) -> pb.ListApiKeysResponse:
        keys = await self.store.list(tenant_id, include_revoked)
        return pb.ListApiKeysResponse(keys=[to_proto(k) for k in keys])

    async def revoke(self, tenant_id: str, key_id: str) -> pb.RevokeApiKeyResponse:
        if not key_id:
            raise invalid("key_id", "required")
        revoked = await self.store.revoke(tenant_id, key_id)
        if revoked is None:
            raise key_not_found(key_id)
        await self.announce(revoked[1])
        return pb.RevokeApiKeyResponse(key=to_proto(revoked[0]))

    async def rotate(
        self, tenant_id: str, key_id: str, grace: duration_pb2.Duration | None
    ) -> pb.RotateApiKeyResponse:
        if not key_id:
            raise invalid("key_id", "required")
        grace_s = DEFAULT_GRACE_S if grace is None else _seconds("grace_period", grace, MAX_GRACE_S)
        rotated = await self.store.rotate(tenant_id, key_id, grace_s)
        if rotated is None:
            raise key_not_found(key_id)
        new, old_hash = rotated
        await self.announce(old_hash)
        old = await self.store.get(tenant_id, key_id)
        assert old is not None  # it was just updated in the same tenant
        return pb.RotateApiKeyResponse(
            key=to_proto(new.info), secret=new.secret, old_key=to_proto(old)
        )
