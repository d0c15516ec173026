"""PIXMESH_EVENTS retention against a real NATS (issue 16): its age and bytes limits come from
settings and are applied to a stream an older release left unbounded, per-message TTL is turned
on, and only job events get a TTL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.runtime import bus as busmod
from services.runtime.bus import Bus, EventRetention
from services.runtime.settings import ServiceSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, "test-bus-retention")
    try:
        await b.ensure_streams()
        yield b
    finally:
        # Back to the defaults the session's services run with.
        await b.ensure_streams()
        await b.close()


async def test_the_events_stream_is_brought_to_the_retention_settings(
    bus: Bus, nats_url: str
) -> None:
    events = busmod.EVENTS_STREAM
    config = (await bus.js.stream_info(events)).config
    # As an older release left it: a week, no byte limit.
    await bus.js.update_stream(config.evolve(max_age=7 * busmod.DAY, max_bytes=-1))
    settings = ServiceSettings(events_max_age_s=7200, events_max_bytes=64 * 1024**2)
    b = await Bus.connect(
        nats_url, "test-bus-retention-2", events=EventRetention.from_settings(settings)
    )
    try:
        assert b.expiry_headers(busmod.job_event_subject("job_x")) == {}
        await b.ensure_streams()
        config = (await b.js.stream_info(events)).config
        assert (config.max_age, config.max_bytes, config.allow_msg_ttl) == (
            7200,
            64 * 1024**2,
            True,
        )
        # The task and upload events' consumers may still need what is older: no TTL there.
        assert b.expiry_headers(busmod.job_event_subject("job_x")) == {"Nats-TTL": "3600"}
        assert b.expiry_headers(busmod.task_event_subject("completed")) == {}
        assert b.expiry_headers(busmod.IMAGE_UPLOADED_SUBJECT) == {}
        # Other streams keep theirs.
        tasks = (await b.js.stream_info(busmod.TASKS_STREAM)).config
        assert (tasks.max_age, tasks.max_bytes) == (7 * busmod.DAY, -1)
    finally:
        await b.close()


async def test_a_bus_that_never_checked_the_stream_sends_no_ttl(nats_url: str) -> None:
    # A server refuses a Nats-TTL header on a stream without per-message TTL.
    b = await Bus.connect(nats_url, "test-bus-retention-3")
    try:
        assert b.expiry_headers(busmod.job_event_subject("job_x")) == {}
    finally:
        await b.close()


def test_the_event_horizons_are_settings_with_a_floor() -> None:
    """A soak shortens them to watch them level off (bench/soak.py --env); an age shorter than
    5 minutes (inside a consumer's redeliveries) is refused."""
    s = ServiceSettings(events_max_age_s=300, job_event_ttl_s=60)
    assert EventRetention.from_settings(s) == EventRetention(
        max_age_s=300, max_bytes=1024**3, job_event_ttl_s=60
    )
    with pytest.raises(ValueError, match="greater than or equal to 300"):
        ServiceSettings(events_max_age_s=299)
