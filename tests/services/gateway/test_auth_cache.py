"""The authenticator's key cache: bounded (least recently used out first), entries live no longer
than the TTL nor past the key's expiry, and a revocation notice on the real NATS evicts the key
from another replica's cache."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import nats
import pytest

from services.gateway.auth import Authenticator, Principal, hash_key
from services.gateway.revocations import Revocations
from services.runtime.errors import Unauthenticated
from tests.services.gateway.fakes import Clock


class Keys:
    """The key store's lookup: counts the calls that reached it."""

    def __init__(self, expires_at: datetime | None = None) -> None:
        self.revoked: set[str] = set()
        self.expires_at = expires_at
        self.lookups: list[str] = []

    async def __call__(self, digest: str) -> Principal | None:
        self.lookups.append(digest)
        if digest in self.revoked:
            return None
        return Principal("t", f"key_{digest[:6]}", frozenset({"read"}), self.expires_at)


def bearer(key: str) -> str:
    return f"Bearer {key}"


async def test_the_cache_holds_at_most_maxsize_keys(clock: Clock) -> None:
    keys = Keys()
    auth = Authenticator(keys, ttl_s=30, maxsize=2, timer=clock)
    for key in ("a", "b", "c"):
        await auth.authenticate(bearer(key))
    assert len(keys.lookups) == 3
    await auth.authenticate(bearer("c"))
    await auth.authenticate(bearer("b"))
    assert len(keys.lookups) == 3  # b and c are cached
    await auth.authenticate(bearer("a"))  # a went out when c came in
    assert keys.lookups[-1] == hash_key("a") and len(keys.lookups) == 4
    await auth.authenticate(bearer("b"))  # b was used more recently than c: c went for a
    assert len(keys.lookups) == 4
    await auth.authenticate(bearer("c"))
    assert len(keys.lookups) == 5


@pytest.mark.parametrize(
    ("ttl_s", "key_life_s", "lives_s"),
    [(30, None, 30), (300, 10, 10)],  # the TTL, or the key's own expiry when that comes first
    ids=["ttl", "key-expiry"],
)
async def test_an_entry_lives_for_the_ttl_and_never_past_its_key(
    clock: Clock, ttl_s: float, key_life_s: float | None, lives_s: float
) -> None:
    expires_at = None if key_life_s is None else datetime.now(UTC) + timedelta(seconds=key_life_s)
    keys = Keys(expires_at)
    auth = Authenticator(keys, ttl_s=ttl_s, timer=clock)
    await auth.authenticate(bearer("a"))
    clock.now += lives_s - 1
    await auth.authenticate(bearer("a"))
    assert len(keys.lookups) == 1
    clock.now += 1.1
    await auth.authenticate(bearer("a"))
    assert len(keys.lookups) == 2


async def test_no_ttl_no_cache(clock: Clock) -> None:
    keys = Keys()
    auth = Authenticator(keys, ttl_s=0, timer=clock)
    await auth.authenticate(bearer("a"))
    await auth.authenticate(bearer("a"))
    assert len(keys.lookups) == 2


@pytest.mark.integration
async def test_a_revocation_on_nats_evicts_the_key_on_another_replica(nats_url: str) -> None:
    keys = Keys()
    here, there = Authenticator(keys, ttl_s=300), Authenticator(keys, ttl_s=300)
    nc_here, nc_there = await nats.connect(nats_url), await nats.connect(nats_url)
    stop = asyncio.Event()
    runs = [
        asyncio.create_task(Revocations(nc, auth).run(stop))
        for nc, auth in ((nc_here, here), (nc_there, there))
    ]
    try:
        await there.authenticate(bearer("a"))
        await there.authenticate(bearer("a"))
        assert len(keys.lookups) == 1  # cached on the other replica
        keys.revoked.add(hash_key("a"))
        # Announced until it lands: the other replica's subscription starts in its own task.
        async with asyncio.timeout(10):
            while True:
                await Revocations(nc_here, here).announce(hash_key("a"))
                try:
                    await there.authenticate(bearer("a"))
                except Unauthenticated as err:
                    assert err.reason == "API_KEY_INVALID"
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*runs)
        await nc_here.close()
        await nc_there.close()
