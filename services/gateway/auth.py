"""Who is calling: API keys turned into a `Principal` (tenant, key, scopes), cached per replica.

Scopes are independent grants, not a ladder: `read` (get, list, watch, download, search),
`write` (upload, create/cancel/delete jobs and images), `admin` (keys, retention, tenant erasure
and the deployment-wide RPCs: fleet status, dead letters). A servicer method asks for the one it
needs with `require_scope`.

The cache (cachetools' TLRUCache: bounded, least recently used out first) holds a key's principal
for at most `ttl_s` and never past the key's expiry; a revoked or rotated key is dropped from
every replica's cache at once through `invalidate`, which the gateway calls when a revocation
notice arrives on NATS (`KEYS_SUBJECT`, services/gateway/revocations.py).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from cachetools import TLRUCache

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


# The most keys one replica caches: far more than a deployment uses within a TTL, and a bound on
# memory against callers sending many distinct keys (a principal is a few hundred bytes).
CACHE_SIZE = 10_000


class Authenticator:
    def __init__(
        self,
        lookup: Lookup,
        ttl_s: float,
        maxsize: int = CACHE_SIZE,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.ttl_s = ttl_s
        self._cache: TLRUCache[str, Principal] = TLRUCache(maxsize, self._expiry, timer)

    def _expiry(self, digest: str, principal: Principal, now: float) -> float:
        """When a cached principal goes (on the cache's timer): after `ttl_s`, or at the key's
        own expiry if that comes first."""
        until = now + self.ttl_s
        if principal.expires_at is not None:
            until = min(until, now + (principal.expires_at.timestamp() - time.time()))
        return until

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an `authorization: Bearer <key>` header value."""
        if not authorization:
            raise missing_key()
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise missing_key()
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        principal = await self.lookup(digest)
        if principal is None:
            self._cache.pop(digest, None)
            raise bad_key()
        self._cache[digest] = principal  # not kept at all when already expired
        return principal

    def invalidate(self, key_sha256: str | None = None) -> None:
        """Forget one key (by its sha256), or every key."""
        if key_sha256 is None:
            self._cache.clear()
        else:
            self._cache.pop(key_sha256, None)
