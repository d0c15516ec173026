"""get_image_metadata, search_images and find_similar on both clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import grpc
import pytest

import pixmesh
from pixmesh import errors
from pixmesh.common.v1 import image_pb2
from tests.pixmesh.conftest import API_KEY
from tests.pixmesh.fake_gateway import Abort, FakeGateway


@pytest.fixture
def client(sync_target: str) -> Iterator[pixmesh.Client]:
    with pixmesh.Client(sync_target, api_key=API_KEY, timeout=5.0) as c:
        yield c


@pytest.fixture
async def aclient(aio_target: str) -> AsyncIterator[pixmesh.AsyncClient]:
    async with pixmesh.AsyncClient(aio_target, api_key=API_KEY, timeout=5.0) as c:
        yield c


def test_metadata_waits_while_the_upload_is_being_read(
    client: pixmesh.Client, fake: FakeGateway
) -> None:
    image = client.upload(b"pixels")
    fake.metadata_pending = 6  # more than gRPC's own retries absorb

    md = client.get_image_metadata(image.image_id)

    assert (md.width, md.height, md.size_bytes) == (640, 480, 6)
    assert fake.count("GetImageMetadata") == 7
    for call in fake.calls:
        assert call.metadata["authorization"] == f"Bearer {API_KEY}"


def test_metadata_without_waiting_and_for_unknown_images(
    client: pixmesh.Client, fake: FakeGateway
) -> None:
    image = client.upload(b"pixels")
    fake.metadata_pending = 10

    with pytest.raises(errors.Unavailable) as pending:
        client.get_image_metadata(image.image_id, wait=False, timeout=2.0)
    with pytest.raises(errors.NotFound) as missing:
        client.get_image_metadata("img_nope")

    assert pending.value.reason == "METADATA_PENDING"
    assert missing.value.reason == "IMAGE_NOT_FOUND"


def test_pending_metadata_gives_up_at_the_deadline(
    client: pixmesh.Client, fake: FakeGateway
) -> None:
    image = client.upload(b"pixels")
    fake.metadata_pending = 10_000

    with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
        client.get_image_metadata(image.image_id, timeout=0.8)


def test_search_pages_lazily_and_sends_the_filters(
    client: pixmesh.Client, fake: FakeGateway
) -> None:
    ids = [client.upload(bytes([i])).image_id for i in range(5)]

    found = client.search_images(
        page_size=2,
        camera_make="Canon",
        taken_after=datetime(2024, 1, 1, tzinfo=UTC),
        min_latitude=48.0,
        max_latitude=49.0,
        min_longitude=2.0,
        max_longitude=3.0,
        formats=["JPEG", image_pb2.PNG],
    )

    assert [r.image_id for r in found] == ids[::-1]
    first = fake.search_requests[0]
    assert first.camera_make == "Canon" and first.page_size == 2
    assert first.taken_after.ToDatetime(tzinfo=UTC) == datetime(2024, 1, 1, tzinfo=UTC)
    assert (first.min_latitude, first.max_longitude) == (48.0, 3.0)
    assert list(first.formats) == [image_pb2.JPEG, image_pb2.PNG]
    assert [r.page_token for r in fake.search_requests] == ["", "2", "4"]


def test_search_refuses_bad_arguments_before_calling(
    client: pixmesh.Client, fake: FakeGateway
) -> None:
    with pytest.raises(ValueError):
        list(client.search_images(page_size=0))
    with pytest.raises(ValueError):
        list(client.search_images(nonsense=1))  # type: ignore[call-arg]
    assert fake.count("SearchImages") == 0


def test_find_similar(client: pixmesh.Client, fake: FakeGateway) -> None:
    a, b, c = (client.upload(bytes([i])).image_id for i in range(3))

    similar = client.find_similar(a, 6, limit=1)
    default = client.find_similar(b)

    assert [(s.image_id, s.distance) for s in similar] == [(b, 3)]
    assert {s.image_id for s in default} == {a, c}
    first, second = fake.similar_requests
    assert (first.max_distance, first.page_size) == (6, 1)
    assert not second.HasField("max_distance") and second.page_size == 20


async def test_async_client_mirrors_the_sync_one(
    aclient: pixmesh.AsyncClient, fake: FakeGateway
) -> None:
    a = (await aclient.upload(b"one")).image_id
    b = (await aclient.upload(b"two")).image_id
    fake.metadata_pending = 6

    md = await aclient.get_image_metadata(a)
    found = [r.image_id async for r in aclient.search_images(page_size=1, camera_model="X")]
    similar = await aclient.find_similar(a, 4)

    assert md.size_bytes == 3
    assert found == [b, a]
    assert [s.image_id for s in similar] == [b]
    assert fake.search_requests[0].camera_model == "X"


async def test_async_errors_keep_their_reason(
    aclient: pixmesh.AsyncClient, fake: FakeGateway
) -> None:
    fake.fail_next(
        "FindSimilar",
        Abort(grpc.StatusCode.FAILED_PRECONDITION, "no hash", "NO_PERCEPTUAL_HASH"),
    )
    image = await aclient.upload(b"x")

    with pytest.raises(errors.FailedPrecondition) as err:
        await aclient.find_similar(image.image_id)
    assert err.value.reason == "NO_PERCEPTUAL_HASH"
