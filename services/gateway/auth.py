"""Who is calling: API keys turned into a `Principal` (tenant, key, scopes), cached per replica.

Scopes are independent grants, not a ladder: `read` (get, list, watch, download, search),
`write` (upload, create/cancel/delete jobs and images), `admin` (keys, retention, tenant erasure
and the deployment-wide RPCs: fleet status, dead letters). A servicer method asks for the one it
needs with `require_scope`.

The cache holds a key's principal for at most `ttl_s` (and never past the key's expiry); a
revoked or rotated key is dropped from every replica's cache at once through `invalidate`, which
the gateway calls when a revocation notice arrives on NATS (`KEYS_SUBJECT`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from services.runtime.errors import PermissionDenied, Unauthenticated

READ = "read"
WRITE = "write"
ADMIN = "admin"
SCOPES: frozenset[str] = frozenset({READ, WRITE, ADMIN})
# What a key gets when its creator names no scopes (the admin CLI's default, CreateApiKey's).
DEFAULT_SCOPES: frozenset[str] = frozenset({READ, WRITE})

# NATS core subject on which a gateway announces a revoked key's hash to every replica.
KEYS_SUBJECT = "pixmesh.gateway.keys.revoked"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the tenant the gateway acts for, the key and what it may do."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]
    expires_at: datetime | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def parse_scopes(values: Iterable[str]) -> frozenset[str]:
    """Scope names, lower-cased and checked; an empty list means DEFAULT_SCOPES."""
    scopes = frozenset(v.strip().lower() for v in values if v.strip())
    unknown = scopes - SCOPES
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}")
    return scopes or DEFAULT_SCOPES


def require_scope(principal: Principal, scope: str) -> Principal:
    """The principal if its key holds `scope`, else PERMISSION_DENIED (reason SCOPE_MISSING)."""
    if not principal.has(scope):
        raise PermissionDenied(
            message=f"this API key lacks the {scope!r} scope",
            reason="SCOPE_MISSING",
            metadata={"scope": scope, "key_id": principal.key_id},
        )
    return principal


def hash_key(key: str) -> str:
    # Keys are 256-bit random tokens, so a plain sha256 is enough (no password stretching).
    return hashlib.sha256(key.encode()).hexdigest()


def missing_key() -> Unauthenticated:
    return Unauthenticated(
        message="missing API key: send 'authorization: Bearer <key>'", reason="API_KEY_MISSING"
    )


def bad_key() -> Unauthenticated:
    return Unauthenticated(message="invalid, expired or revoked API key", reason="API_KEY_INVALID")


# Looks a key up by its sha256: its principal if it is valid now (not revoked, not expired).
Lookup = Callable[[str], Awaitable[Principal | None]]


class Authenticator:
    def __init__(self, lookup: Lookup, ttl_s: float) -> None:
        self.lookup = lookup
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an `authorization: Bearer <key>` header value."""
        if not authorization:
            raise missing_key()
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise missing_key()
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached and cached[1] > now:
            return cached[0]
        principal = await self.lookup(digest)
        if principal is None:
            self._cache.pop(digest, None)
            raise bad_key()
        until = now + self.ttl_s
        if principal.expires_at is not None:
            until = min(until, now + (principal.expires_at.timestamp() - time.time()))
        if len(self._cache) > 10_000:  # bound memory against many distinct keys
            self._cache.clear()
        self._cache[digest] = (principal, until)
        return principal

    def invalidate(self, key_sha256: str | None = None) -> None:
        """Forget one key (by its sha256), or every key."""
        if key_sha256 is None:
            self._cache.clear()
        else:
            self._cache.pop(key_sha256, None)
