"""Presence: announcers on a real NATS server and the board that counts replicas from them.

Each test uses a service name of its own, so the stack's services (which announce on the same
server when the session runs them) never meet its counts.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import cast

import nats
import pytest
from nats.aio.client import Client as NatsClient

from pixmesh.events.v1 import events_pb2
from services.runtime.presence import (
    MISSED_INTERVALS,
    Announcer,
    PresenceBoard,
    advertised_address,
    instance_id,
    presence_of,
)
from services.runtime.settings import ServiceSettings


def _presence(service: str, instance: str, interval_s: float = 1.0) -> events_pb2.Presence:
    p = events_pb2.Presence(service=service, instance=instance, grpc_address="10.0.0.1:50053")
    p.interval.FromNanoseconds(round(interval_s * 1e9))
    return p


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _board(clock: Callable[[], float]) -> PresenceBoard:
    # receive() and instances() never touch the connection.
    return PresenceBoard(cast(NatsClient, None), clock=clock)


def test_an_instance_not_heard_for_three_intervals_is_dropped() -> None:
    clock = Clock()
    board = _board(clock)
    board.receive(_presence("imaging", "a", 2.0).SerializeToString())
    board.receive(_presence("imaging", "b", 2.0).SerializeToString())
    clock.now += 3.0
    board.receive(_presence("imaging", "b", 2.0).SerializeToString())
    clock.now += MISSED_INTERVALS * 2.0 - 3.0 + 0.1  # a: 6.1 s since heard; b: 3.1 s
    live = board.instances()
    assert [s.presence.instance for s in live["imaging"]] == ["b"]
    assert live["imaging"][0].last_seen == 1_003.0
    clock.now += 3.0
    assert "imaging" not in board.instances()


def test_leaving_forgets_at_once_and_junk_is_ignored() -> None:
    board = _board(Clock())
    board.receive(_presence("jobs", "a").SerializeToString())
    board.receive(_presence("jobs", "b").SerializeToString())
    leaving = _presence("jobs", "a")
    leaving.leaving = True
    board.receive(leaving.SerializeToString())
    board.receive(b"\xff\xff not a proto")
    board.receive(events_pb2.Presence(service="jobs").SerializeToString())  # no instance
    assert [s.presence.instance for s in board.instances()["jobs"]] == ["b"]


def test_presence_from_settings() -> None:
    settings = ServiceSettings(
        service_name="imaging", grpc_host="127.0.0.1", grpc_port=50053, metrics_port=9103
    )
    p = presence_of(settings, interval_s=2.5)
    assert (p.service, p.grpc_address, p.metrics_address) == (
        "imaging",
        "127.0.0.1:50053",
        "127.0.0.1:9103",
    )
    assert p.instance == instance_id() and p.instance.endswith(f"-{os.getpid()}")
    assert p.interval.ToNanoseconds() == 2_500_000_000
    assert p.started_at.seconds > 0 and p.version
    off = presence_of(settings.model_copy(update={"metrics_port": 0}))
    assert off.metrics_address == ""
    # A wildcard bind is announced with an address others can use.
    assert not advertised_address("0.0.0.0", 50053).startswith("0.0.0.0")
    assert advertised_address("::1", 9) == "[::1]:9"


# --- against NATS -----------------------------------------------------------------------------


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.mark.integration
async def test_replicas_come_and_go_on_a_real_server(nc: NatsClient) -> None:
    service = f"test-{uuid.uuid4().hex[:8]}"
    board = PresenceBoard(nc)
    await board.start()
    stops = [asyncio.Event(), asyncio.Event()]
    announcers = [Announcer(nc, _presence(service, f"r{i}", 0.2)) for i in range(2)]
    tasks = [asyncio.create_task(a.run(s)) for a, s in zip(announcers, stops, strict=True)]
    try:

        def count() -> int:
            return len(board.instances().get(service, []))

        await _until(lambda: count() == 2)
        # A graceful stop says goodbye: gone at once, not after three intervals.
        stops[0].set()
        await tasks[0]
        await _until(lambda: count() == 1, timeout=0.5)
        # One that was killed (no goodbye, no more rounds) is dropped after three intervals.
        await nc.publish(
            f"pixmesh.presence.{service}", _presence(service, "killed", 0.2).SerializeToString()
        )
        await _until(lambda: count() == 2)
        await _until(lambda: count() == 1, timeout=MISSED_INTERVALS * 0.2 + 1.0)
        assert [s.presence.instance for s in board.instances()[service]] == ["r1"]
    finally:
        for s in stops:
            s.set()
        await asyncio.gather(*tasks)
        await board.close()


@pytest.mark.integration
async def test_a_new_board_probes_and_hears_everyone_at_once(nc: NatsClient) -> None:
    service = f"test-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    # Announces once now, then not for a minute: only the probe can make it speak again.
    task = asyncio.create_task(Announcer(nc, _presence(service, "slow", 60.0)).run(stop))
    try:
        await asyncio.sleep(0.3)
        board = PresenceBoard(nc)
        await board.start()
        await _until(lambda: service in board.instances(), timeout=2.0)
        seen = board.instances()[service][0]
        assert seen.presence.grpc_address == "10.0.0.1:50053"
        assert seen.last_seen_ts().seconds > 0
        await board.close()
    finally:
        stop.set()
        await task
