from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import grpc
import pytest

import pixmesh
from pixmesh import errors, ops
from pixmesh._common import CHUNK_SIZE
from pixmesh.common.v1.job_pb2 import Job
from tests.pixmesh.conftest import API_KEY
from tests.pixmesh.fake_gateway import Abort, FakeGateway

UNAVAILABLE = Abort(grpc.StatusCode.UNAVAILABLE, "try again")


@pytest.fixture
async def client(aio_target: str) -> AsyncIterator[pixmesh.AsyncClient]:
    async with pixmesh.AsyncClient(aio_target, api_key=API_KEY, timeout=5.0) as c:
        yield c


async def test_calls_carry_the_api_key_and_a_deadline(
    client: pixmesh.AsyncClient, fake: FakeGateway
) -> None:
    await client.list_operations()
    await client.upload(b"x")
    for call in fake.calls:
        assert call.metadata["authorization"] == f"Bearer {API_KEY}"
        assert call.time_remaining is not None and 0 < call.time_remaining <= 5.1


async def test_unavailable_is_retried_then_succeeds(
    client: pixmesh.AsyncClient, fake: FakeGateway
) -> None:
    fake.fail_next("ListOperations", UNAVAILABLE, UNAVAILABLE)
    resp = await client.list_operations()
    assert [op.name for op in resp.operations] == ["resize", "denoise"]
    assert fake.count("ListOperations") == 3


async def test_invalid_argument_is_raised_at_once_with_its_details(
    client: pixmesh.AsyncClient, fake: FakeGateway
) -> None:
    image = await client.upload(b"x")
    fake.fail_next(
        "CreateJob",
        Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad pipeline",
            "OPERATION_INVALID",
            [("operations[0].rotate.angle", "must be within -360..360")],
        ),
    )
    with pytest.raises(errors.InvalidArgument) as info:
        await client.create_job(image.image_id, [ops.rotate(90)])
    assert fake.count("CreateJob") == 1
    assert info.value.reason == "OPERATION_INVALID"
    assert info.value.violations[0].field == "operations[0].rotate.angle"


async def test_upload_chunks_reassemble_and_a_path_is_replayed_on_retry(
    client: pixmesh.AsyncClient, fake: FakeGateway, tmp_path: Path
) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 7)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    fake.fail_next("UploadImage", UNAVAILABLE)
    image = await client.upload(path)
    assert fake.count("UploadImage") == 2
    messages = fake.upload_messages[-1]
    assert messages[0].info.filename == "big.png"
    assert [len(m.chunk) for m in messages[1:]] == [CHUNK_SIZE] * 3 + [7]
    assert fake.images[image.image_id] == data


async def test_watch_iterates_to_the_terminal_state_across_a_broken_stream(
    client: pixmesh.AsyncClient, fake: FakeGateway
) -> None:
    image = await client.upload(b"x")
    job = await client.create_job(image.image_id, ["resize=10x10", "metadata"])
    fake.watch_breaks = 1
    states = [j.state async for j in client.watch_job(job.job_id)]
    assert states == [Job.PENDING, Job.RUNNING, Job.RUNNING, Job.SUCCEEDED]
    assert fake.count("WatchJob") == 2


async def test_watch_can_be_left_early(client: pixmesh.AsyncClient, fake: FakeGateway) -> None:
    image = await client.upload(b"x")
    job = await client.create_job(image.image_id, ["resize=10x10"])
    async with aclosing(client.watch_job(job.job_id)) as updates:
        async for update in updates:
            assert update.state == Job.PENDING
            break
    assert (await client.get_job(job.job_id)).job_id == job.job_id  # the channel still works


async def test_process_and_download(client: pixmesh.AsyncClient, tmp_path: Path) -> None:
    seen: list[Job] = []
    job = await client.process(b"img", ["convert=png"], on_update=seen.append)
    assert job.state == Job.SUCCEEDED
    assert [j.state for j in seen] == [Job.PENDING, Job.RUNNING, Job.SUCCEEDED]
    assert await client.download_output(job.job_id) == b"out:img"
    saved = await client.save_output(job.job_id, tmp_path / "o.png")
    assert saved.read_bytes() == b"out:img"


async def test_list_jobs_pages(client: pixmesh.AsyncClient, fake: FakeGateway) -> None:
    image = await client.upload(b"x")
    ids = [(await client.create_job(image.image_id, ["flip"])).job_id for _ in range(3)]
    listed = [j.job_id async for j in client.list_jobs(page_size=1)]
    assert listed == ids[::-1]
    assert fake.count("ListJobs") == 3


async def test_a_failed_job_is_returned_not_raised(client: pixmesh.AsyncClient) -> None:
    job = await client.process(b"CORRUPT data", ["resize=10x10"])
    assert job.state == Job.FAILED
    assert job.error.reason == "IMAGE_CORRUPT"


async def test_renditions_plan_create_and_download_by_name(
    client: pixmesh.AsyncClient, fake: FakeGateway, tmp_path: Path
) -> None:
    image = await client.upload(b"jpeg")
    planned = await client.plan_job(image.image_id, renditions={"a": ["convert=png"]})
    assert [r.name for r in planned.plan.renditions] == ["a"]
    job = await client.process(
        b"jpeg", ["flip"], renditions=[ops.rendition("a"), ops.rendition("b", ["blur=2"])]
    )
    assert list(fake.create_requests[0].renditions) == [
        ops.rendition("a"),
        ops.rendition("b", [ops.blur(2)]),
    ]
    assert [o.rendition for o in job.outputs] == ["a", "b"]
    assert await client.download_output(job.job_id, rendition="b") == b"out:jpeg:b"
    path = await client.save_output(job.job_id, tmp_path / "a.jpg", rendition="a")
    assert path.read_bytes() == b"out:jpeg:a"
    with pytest.raises(errors.NotFound):
        await client.download_output(job.job_id, rendition="c")
    with pytest.raises(ValueError, match="operations, a preset or renditions"):
        await client.create_job(image.image_id, [])
