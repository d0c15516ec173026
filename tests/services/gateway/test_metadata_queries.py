"""The gateway's metadata queries against fakes of its image table and the metadata service."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from pixmesh.common.v1 import image_pb2, metadata_pb2
from pixmesh.gateway.v1 import gateway_pb2
from pixmesh.metadata.v1 import metadata_pb2 as mpb
from services.gateway.metadata import MetadataQueries, search_filter
from services.runtime.errors import (
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
)
from services.runtime.server import status_details

IMAGE = image_pb2.Image(image_id="img_1", sha256="ab" * 32, width=4, height=3)


def rpc_error(err: ServiceError) -> grpc.aio.AioRpcError:
    """What a grpc.aio client raises when the metadata service answered with `err`."""
    trailers = grpc.aio.Metadata(
        ("grpc-status-details-bin", status_details(err).SerializeToString())
    )
    return grpc.aio.AioRpcError(err.code, grpc.aio.Metadata(), trailers, err.message)


class Images:
    async def get_image(self, tenant_id: str, image_id: str) -> image_pb2.Image | None:
        return IMAGE if (tenant_id, image_id) == ("tenant-a", IMAGE.image_id) else None


class Stub:
    """A MetadataServiceStub that records requests and answers from `replies`."""

    def __init__(self, **replies: Any) -> None:
        self.replies = replies
        self.requests: list[Any] = []

    def __getattr__(self, method: str) -> Any:
        async def call(request: Any, timeout: float) -> Any:
            assert timeout > 0
            self.requests.append(request)
            reply = self.replies[method]
            if isinstance(reply, Exception):
                raise reply
            return reply

        return call


class Events:
    def __init__(self, fail: bool = False) -> None:
        self.announced: list[tuple[str, str]] = []
        self.fail = fail

    async def image_uploaded(self, tenant_id: str, image: image_pb2.Image) -> None:
        if self.fail:
            raise Unavailable("nats down", reason="EVENTS_UNAVAILABLE")
        self.announced.append((tenant_id, image.image_id))


async def test_get_asks_by_the_images_sha256_within_the_tenant() -> None:
    md = metadata_pb2.ImageMetadata(sha256=IMAGE.sha256, width=4)
    stub = Stub(GetImageMetadata=mpb.GetImageMetadataResponse(metadata=md))
    queries = MetadataQueries(Images(), stub, Events())  # type: ignore[arg-type]

    assert await queries.get("tenant-a", "img_1", 5.0) == md
    assert stub.requests == [mpb.GetImageMetadataRequest(tenant_id="tenant-a", sha256="ab" * 32)]


async def test_another_tenants_image_is_not_found_and_never_asked_for() -> None:
    stub = Stub()
    queries = MetadataQueries(Images(), stub, Events())  # type: ignore[arg-type]

    for call in (
        queries.get("tenant-b", "img_1", 5.0),
        queries.similar("tenant-b", gateway_pb2.FindSimilarRequest(image_id="img_1"), 5.0),
    ):
        with pytest.raises(NotFound) as err:
            await call
        assert err.value.reason == "IMAGE_NOT_FOUND"
    with pytest.raises(InvalidArgument):
        await queries.get("tenant-a", "", 5.0)
    assert stub.requests == []


async def test_missing_metadata_is_pending_and_the_upload_is_announced_again() -> None:
    missing = rpc_error(NotFound("no metadata for this image", reason="METADATA_NOT_FOUND"))
    events = Events()
    stub = Stub(GetImageMetadata=missing, FindSimilar=missing)
    queries = MetadataQueries(Images(), stub, events)  # type: ignore[arg-type]

    for call in (
        queries.get("tenant-a", "img_1", 5.0),
        queries.similar("tenant-a", gateway_pb2.FindSimilarRequest(image_id="img_1"), 5.0),
    ):
        with pytest.raises(Unavailable) as err:
            await call
        assert err.value.reason == "METADATA_PENDING"
        assert err.value.retryable
    assert events.announced == [("tenant-a", "img_1")] * 2


async def test_pending_even_when_the_announcement_fails() -> None:
    missing = rpc_error(NotFound("no metadata", reason="METADATA_NOT_FOUND"))
    queries = MetadataQueries(Images(), Stub(GetImageMetadata=missing), Events(fail=True))  # type: ignore[arg-type]

    with pytest.raises(Unavailable) as err:
        await queries.get("tenant-a", "img_1", 5.0)
    assert err.value.reason == "METADATA_PENDING"


async def test_other_errors_pass_through_with_their_reason_and_fields() -> None:
    bad = InvalidArgument("max_distance: at most 32", reason="INVALID_ARGUMENT")
    events = Events()
    queries = MetadataQueries(Images(), Stub(FindSimilar=rpc_error(bad)), events)  # type: ignore[arg-type]

    request = gateway_pb2.FindSimilarRequest(image_id="img_1", max_distance=40)
    with pytest.raises(ServiceError) as err:
        await queries.similar("tenant-a", request, 5.0)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert events.announced == []


async def test_similar_forwards_distance_only_when_given() -> None:
    stub = Stub(FindSimilar=mpb.FindSimilarResponse())
    queries = MetadataQueries(Images(), stub, Events())  # type: ignore[arg-type]

    await queries.similar("tenant-a", gateway_pb2.FindSimilarRequest(image_id="img_1"), 5.0)
    await queries.similar(
        "tenant-a",
        gateway_pb2.FindSimilarRequest(image_id="img_1", max_distance=0, page_size=3),
        5.0,
    )

    first, second = stub.requests
    assert not first.HasField("max_distance")
    assert (second.max_distance, second.page_size, second.sha256) == (0, 3, IMAGE.sha256)


async def test_search_carries_the_tenant_filter_and_paging() -> None:
    reply = mpb.SearchImagesResponse(
        images=[metadata_pb2.ImageRecord(image_id="img_9")], next_page_token="next"
    )
    stub = Stub(SearchImages=reply)
    queries = MetadataQueries(Images(), stub, Events())  # type: ignore[arg-type]
    request = gateway_pb2.SearchImagesRequest(camera_make="Canon", page_size=7, page_token="tok")

    resp = await queries.search("tenant-a", request, 5.0)

    assert [r.image_id for r in resp.images] == ["img_9"] and resp.next_page_token == "next"
    (sent,) = stub.requests
    assert (sent.tenant_id, sent.page_size, sent.page_token) == ("tenant-a", 7, "tok")
    assert sent.filter == metadata_pb2.ImageSearchFilter(camera_make="Canon")


def test_search_filter_copies_every_filter_field() -> None:
    request = gateway_pb2.SearchImagesRequest(
        camera_make="Canon",
        camera_model="R5",
        taken_after=datetime(2020, 1, 1, tzinfo=UTC),
        taken_before=datetime(2021, 1, 1, tzinfo=UTC),
        min_latitude=0.0,  # zero is a bound, not "unset"
        max_latitude=1.5,
        min_longitude=-2.0,
        max_longitude=2.0,
        min_width=1,
        max_width=2,
        min_height=3,
        max_height=4,
        formats=[image_pb2.JPEG, image_pb2.PNG],
        page_size=9,
        page_token="x",
    )

    f = search_filter(request)

    # Every filter field has the same name and value in the public request.
    filter_fields = {field.name for field in f.DESCRIPTOR.fields}
    request_fields = {field.name for field in request.DESCRIPTOR.fields}
    assert filter_fields == request_fields - {"page_size", "page_token"}
    for name in filter_fields:
        assert getattr(f, name) == getattr(request, name), name
    assert f.HasField("min_latitude")
    assert not search_filter(gateway_pb2.SearchImagesRequest()).HasField("min_latitude")
