"""fleet_status in both clients (against the fake gateway) and the table `pixmesh status` prints."""

from __future__ import annotations

import grpc
import pytest

import pixmesh
from pixmesh import errors
from pixmesh._render import age_text, fleet_table
from pixmesh.common.v1.fleet_pb2 import FleetStatus
from tests.pixmesh.conftest import API_KEY
from tests.pixmesh.fake_gateway import Abort, FakeGateway

UNAVAILABLE = Abort(grpc.StatusCode.UNAVAILABLE, "try again")


def sample() -> FleetStatus:
    status = FleetStatus()
    status.time.FromSeconds(1_700_000_000)
    status.services.add(service="gateway", replicas=2)
    jobs = status.services.add(service="jobs", replicas=1)
    jobs.queues.add(stream="PIXMESH_EVENTS", consumer="jobs-task-events", waiting=1)
    imaging = status.services.add(service="imaging", replicas=3, dead_letters=4)
    tasks = imaging.queues.add(
        stream="PIXMESH_TASKS",
        consumer="imaging-tasks",
        pending=12,
        ack_pending=6,
        redelivered=1,
        waiting=0,
    )
    tasks.oldest_age.FromMilliseconds(125_000)
    status.services.add(service="inference", replicas=0)
    metadata = status.services.add(service="metadata", replicas=1)
    metadata.queues.add(stream="PIXMESH_TASKS", consumer="metadata-tasks", waiting=2)
    uploads = metadata.queues.add(stream="PIXMESH_EVENTS", consumer="metadata-uploads", pending=5)
    uploads.oldest_age.FromMilliseconds(2_500)
    status.jobs.window.FromSeconds(60)
    status.jobs.created = 30
    status.jobs.created_per_second = 0.5
    status.jobs.finished = 27
    status.jobs.failed = 2
    status.jobs.finished_per_second = 0.45
    status.jobs.running = 7
    status.jobs.pending = 1
    status.warnings.append("NATS: consumer x unreadable (TimeoutError)")
    return status


def test_the_table_has_a_row_per_service_and_queue_then_rates_and_warnings() -> None:
    lines = list(fleet_table(sample()))
    assert lines[0].split() == [
        "SERVICE", "REPLICAS", "QUEUE", "PENDING", "ACK-PENDING", "OLDEST", "REDELIVERED", "DLQ",
    ]  # fmt: skip
    rows = [line.split() for line in lines[1:7]]
    assert rows == [
        ["gateway", "2", "-", "-", "-", "-", "-", "0"],
        ["jobs", "1", "jobs-task-events", "0", "0", "-", "0", "0"],
        ["imaging", "3", "imaging-tasks", "12", "6", "2m05s", "1", "4"],
        ["inference", "0", "-", "-", "-", "-", "-", "0"],
        ["metadata", "1", "metadata-tasks", "0", "0", "-", "0", "0"],
        ["metadata-uploads", "5", "0", "2.5s", "0"],
    ]
    # Columns line up: every value ends where its header does.
    header = lines[0]
    assert lines[3].index("12") + 2 == header.index("PENDING") + len("PENDING")
    assert lines[7] == ""
    assert lines[8] == (
        "jobs/s over the last 60s: 0.50 created, 0.45 finished (2 failed); running 7, pending 1"
    )
    assert lines[9:] == [
        "warning: no replica of inference is running",
        "warning: metadata-uploads: 5 pending and no worker fetching",
        "warning: NATS: consumer x unreadable (TimeoutError)",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (9.96, "10.0s"), (42, "42s"), (245, "4m05s"), (7380, "2h03m"),
     (3 * 86400 + 4 * 3600 + 59, "3d04h")],
)  # fmt: skip
def test_ages_read_at_a_glance(seconds: float, text: str) -> None:
    assert age_text(seconds) == text


def test_sync_client_reads_the_status_and_retries_unavailable(
    sync_target: str, fake: FakeGateway
) -> None:
    fake.fleet = sample()
    fake.fail_next("GetFleetStatus", UNAVAILABLE, UNAVAILABLE)
    with pixmesh.Client(sync_target, api_key=API_KEY, timeout=5.0) as c:
        assert c.fleet_status() == sample()
    assert fake.count("GetFleetStatus") == 3
    call = fake.calls[-1]
    assert call.metadata["authorization"] == f"Bearer {API_KEY}"
    assert call.time_remaining is not None and 0 < call.time_remaining <= 5.1


async def test_async_client_reads_the_status_and_raises_what_is_not_retried(
    aio_target: str, fake: FakeGateway
) -> None:
    fake.fleet = sample()
    async with pixmesh.AsyncClient(aio_target, api_key=API_KEY, timeout=5.0) as c:
        fake.fail_next("GetFleetStatus", UNAVAILABLE)
        assert await c.fleet_status() == sample()
        fake.fail_next(
            "GetFleetStatus", Abort(grpc.StatusCode.UNAUTHENTICATED, "no", "API_KEY_INVALID")
        )
        with pytest.raises(errors.Unauthenticated):
            await c.fleet_status()
    assert fake.count("GetFleetStatus") == 3
