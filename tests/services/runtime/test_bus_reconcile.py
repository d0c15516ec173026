"""Bus against a real NATS server: durable consumers and streams are brought to the settings the
fleet starts with (issue 8: no single-replica assumption), and queue_stats reads the lag."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.js import api as js_api

from pixmesh.common.v1 import job_pb2
from services.runtime import bus as busmod
from services.runtime.bus import Bus

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, "test-bus-reconcile")
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def scratch(bus: Bus) -> AsyncIterator[tuple[str, str]]:
    """A work-queue stream of its own (the services' streams are left alone)."""
    name = f"TEST_{uuid.uuid4().hex[:8].upper()}"
    subject = f"test.{name.lower()}"
    await bus.js.add_stream(
        js_api.StreamConfig(
            name=name,
            subjects=[f"{subject}.>"],
            retention=js_api.RetentionPolicy.WORK_QUEUE,
            storage=js_api.StorageType.MEMORY,
        )
    )
    try:
        yield name, f"{subject}.work"
    finally:
        await bus.js.delete_stream(name)


async def _publish(bus: Bus, subject: str, n: int) -> None:
    for i in range(n):
        await bus.publish(subject, job_pb2.JobError(code=str(i)), msg_id=f"{subject}.{i}")


async def test_a_consumer_is_created_then_updated_to_new_settings(
    bus: Bus, scratch: tuple[str, str]
) -> None:
    stream, subject = scratch
    await bus.ensure_consumer(
        stream, "work", subject, ack_wait=30.0, max_deliver=6, max_ack_pending=16
    )
    await bus.ensure_consumer(
        stream, "work", subject, ack_wait=12.0, max_deliver=4, max_ack_pending=500
    )
    config = (await bus.js.consumer_info(stream, "work")).config
    assert (config.ack_wait, config.max_deliver, config.max_ack_pending) == (12.0, 4, 500)


async def test_a_consumer_whose_fixed_settings_differ_is_recreated_without_losing_tasks(
    bus: Bus, scratch: tuple[str, str]
) -> None:
    stream, subject = scratch
    other = subject.replace(".work", ".other")
    # Made by an older release with another filter subject (not updatable in place).
    await bus.js.add_consumer(
        stream,
        js_api.ConsumerConfig(
            durable_name="work", filter_subject=other, ack_policy=js_api.AckPolicy.EXPLICIT
        ),
    )
    await _publish(bus, subject, 3)
    await bus.ensure_consumer(
        stream, "work", subject, ack_wait=10.0, max_deliver=3, max_ack_pending=100
    )
    info = await bus.js.consumer_info(stream, "work")
    assert info.config.filter_subject == subject
    assert info.num_pending == 3  # the work queue kept them for the new consumer
    psub = await bus.js.pull_subscribe_bind("work", stream)
    msgs = await psub.fetch(3, timeout=2.0)
    assert len(msgs) == 3


async def test_an_unchanged_consumer_is_left_alone(bus: Bus, scratch: tuple[str, str]) -> None:
    stream, subject = scratch
    await bus.ensure_consumer(
        stream, "work", subject, ack_wait=7.5, max_deliver=2, max_ack_pending=9
    )
    before = await bus.js.consumer_info(stream, "work")
    await bus.ensure_consumer(
        stream, "work", subject, ack_wait=7.5, max_deliver=2, max_ack_pending=9
    )
    after = await bus.js.consumer_info(stream, "work")
    assert after.created == before.created
    assert after.config == before.config


async def test_queue_stats_reads_lag_in_flight_and_the_oldest_task(
    bus: Bus, scratch: tuple[str, str]
) -> None:
    stream, subject = scratch
    await bus.ensure_consumer(
        stream, "work", subject, ack_wait=30.0, max_deliver=3, max_ack_pending=50
    )
    empty = await bus.queue_stats("work", subject, stream=stream)
    assert (empty.pending, empty.ack_pending, empty.oldest_age_s) == (0, 0, None)

    await _publish(bus, subject, 4)
    await asyncio.sleep(0.3)
    psub = await bus.js.pull_subscribe_bind("work", stream)
    (first,) = await psub.fetch(1, timeout=2.0)
    stats = await bus.queue_stats("work", subject, stream=stream)
    assert (stats.pending, stats.ack_pending) == (3, 1)
    assert stats.oldest_age_s is not None and 0.2 <= stats.oldest_age_s < 30
    await first.ack()


async def test_existing_streams_are_brought_to_the_settings(bus: Bus) -> None:
    await bus.ensure_streams()
    dlq = busmod.DLQ_STREAM
    config = (await bus.js.stream_info(dlq)).config
    # As an older release (or an operator) left it.
    await bus.js.update_stream(config.evolve(max_age=3600.0))
    await bus.ensure_streams()
    config = (await bus.js.stream_info(dlq)).config
    assert config.max_age == busmod.STREAMS[dlq].max_age
    assert config.num_replicas == 1


async def test_replicas_beyond_the_cluster_are_refused_and_logged_not_fatal(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # One node cannot hold R3: the service keeps running on the stream as it is, and says so.
    b = await Bus.connect(nats_url, "test-bus-r3", stream_replicas=3)
    try:
        await b.ensure_streams()
        assert (await b.js.stream_info(busmod.DLQ_STREAM)).config.num_replicas == 1
        assert any("could not update stream" in r.getMessage() for r in caplog.records)
    finally:
        await b.close()
