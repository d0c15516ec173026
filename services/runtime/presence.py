"""Who is running: every process of every service announces itself on core NATS, and a
`PresenceBoard` keeps the last announcement of each one.

An announcement (`pixmesh.events.v1.Presence`) goes to `pixmesh.presence.<service>` every few
seconds, and once more with `leaving` set when the process drains, so a stopped replica leaves the
count at once. A replica that was killed is dropped after it missed `MISSED_INTERVALS`
announcements. Core NATS, not JetStream: presence is only worth anything live, and nothing needs
storing or acknowledging. A board that starts asks everyone to announce now (`PROBE_SUBJECT`)
instead of undercounting until the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata as importlib_metadata

from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from pixmesh.events.v1 import events_pb2
from services.runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

PRESENCE_PREFIX = "pixmesh.presence"
# Not under PRESENCE_PREFIX, so boards (subscribed to pixmesh.presence.>) do not see probes.
PROBE_SUBJECT = "pixmesh.presence-probe"
DEFAULT_INTERVAL_S = 5.0
MISSED_INTERVALS = 3


def presence_subject(service: str) -> str:
    return f"{PRESENCE_PREFIX}.{service}"


def instance_id() -> str:
    """This process, unique in the fleet: <hostname>-<pid> (a pod name in Kubernetes)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def version() -> str:
    try:
        return importlib_metadata.version("pixmesh")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def advertised_address(host: str, port: int) -> str:
    """host:port others can reach: a wildcard bind (0.0.0.0, ::) is replaced by this host's
    address, which is what an operator can use (a pod IP in Kubernetes)."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        name = socket.gethostname()
        try:
            host = socket.gethostbyname(name)
        except OSError:
            host = name
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"{host}:{port}"


def presence_of(
    settings: ServiceSettings, interval_s: float = DEFAULT_INTERVAL_S
) -> events_pb2.Presence:
    """This process's announcement, from its settings."""
    presence = events_pb2.Presence(
        service=settings.service_name,
        instance=instance_id(),
        grpc_address=advertised_address(settings.grpc_host, settings.grpc_port),
        metrics_address=advertised_address(settings.metrics_host, settings.metrics_port)
        if settings.metrics_port
        else "",
        version=version(),
    )
    presence.started_at.GetCurrentTime()
    presence.interval.FromNanoseconds(round(interval_s * 1e9))
    return presence


class Announcer:
    """An App worker: announces `presence` every interval until stopped, then says goodbye."""

    def __init__(self, nc: NatsClient, presence: events_pb2.Presence) -> None:
        self.nc = nc
        self.presence = presence
        self.interval_s = presence.interval.ToNanoseconds() / 1e9 or DEFAULT_INTERVAL_S
        self.subject = presence_subject(presence.service)

    @classmethod
    def for_service(
        cls, nc: NatsClient, settings: ServiceSettings, interval_s: float = DEFAULT_INTERVAL_S
    ) -> Announcer:
        return cls(nc, presence_of(settings, interval_s))

    async def announce(self, *, leaving: bool = False) -> None:
        message = events_pb2.Presence()
        message.CopyFrom(self.presence)
        message.leaving = leaving
        try:
            await self.nc.publish(self.subject, message.SerializeToString())
        except Exception as exc:  # disconnected: the next round (or a probe) tries again
            log.warning("presence announcement failed: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        async def on_probe(msg: Msg) -> None:
            await self.announce()

        probes: Subscription | None = None
        try:
            probes = await self.nc.subscribe(PROBE_SUBJECT, cb=on_probe)
        except Exception as exc:
            log.warning("cannot subscribe to presence probes: %s", exc)
        try:
            while not stop.is_set():
                await self.announce()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            if probes is not None:
                with contextlib.suppress(Exception):
                    await probes.unsubscribe()
            await self.announce(leaving=True)
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=1)


@dataclass(frozen=True)
class Seen:
    presence: events_pb2.Presence
    # Wall-clock time (time.time()) the last announcement arrived.
    last_seen: float

    @property
    def expires(self) -> float:
        interval = self.presence.interval.ToNanoseconds() / 1e9 or DEFAULT_INTERVAL_S
        return self.last_seen + MISSED_INTERVALS * interval

    def last_seen_ts(self) -> Timestamp:
        ts = Timestamp()
        ts.FromNanoseconds(round(self.last_seen * 1e9))
        return ts


class PresenceBoard:
    """The last announcement of every instance heard from within MISSED_INTERVALS intervals."""

    def __init__(self, nc: NatsClient, *, clock: Callable[[], float] = time.time) -> None:
        self.nc = nc
        self.clock = clock
        self._seen: dict[tuple[str, str], Seen] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        async def on_presence(msg: Msg) -> None:
            self.receive(msg.data)

        self._sub = await self.nc.subscribe(f"{PRESENCE_PREFIX}.>", cb=on_presence)
        # Flushed so the subscription is in place before anyone answers the probe.
        await self.nc.flush(timeout=2)
        await self.nc.publish(PROBE_SUBJECT, b"")

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def receive(self, data: bytes) -> None:
        try:
            presence = events_pb2.Presence.FromString(data)
        except Exception:
            log.warning("ignoring a malformed presence announcement")
            return
        if not presence.service or not presence.instance:
            return
        key = (presence.service, presence.instance)
        if presence.leaving:
            self._seen.pop(key, None)
        else:
            self._seen[key] = Seen(presence, self.clock())

    def instances(self) -> Mapping[str, list[Seen]]:
        """Live instances by service, each list ordered by instance id."""
        now = self.clock()
        for key in [k for k, seen in self._seen.items() if seen.expires < now]:
            del self._seen[key]
        by_service: dict[str, list[Seen]] = {}
        for (service, _), seen in sorted(self._seen.items()):
            by_service.setdefault(service, []).append(seen)
        return by_service
