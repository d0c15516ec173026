from __future__ import annotations

import io
import os
from pathlib import Path

import grpc
import pytest

import pixmesh
from pixmesh import errors, ops
from pixmesh._common import CHUNK_SIZE
from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.job_pb2 import Job
from tests.pixmesh.conftest import API_KEY
from tests.pixmesh.fake_gateway import Abort, FakeGateway

UNAVAILABLE = Abort(grpc.StatusCode.UNAVAILABLE, "try again")


def client(target: str, **kwargs: object) -> pixmesh.Client:
    return pixmesh.Client(target, api_key=API_KEY, **kwargs)  # type: ignore[arg-type]


def test_every_call_sends_the_api_key_and_a_deadline(sync_target: str, fake: FakeGateway) -> None:
    with client(sync_target, timeout=7.0) as c:
        image = c.upload(b"pixels")
        job = c.create_job(image.image_id, ["resize=10x10"])
        c.get_job(job.job_id)
        list(c.watch_job(job.job_id))
        c.list_operations()
    assert {call.method for call in fake.calls} == {
        "UploadImage",
        "CreateJob",
        "GetJob",
        "WatchJob",
        "ListOperations",
    }
    for call in fake.calls:
        assert call.metadata["authorization"] == f"Bearer {API_KEY}"
        assert call.metadata["user-agent"].startswith("pixmesh-python/")
        assert call.time_remaining is not None
    # The wire format rounds deadlines up a little, hence the slack.
    unary = [c.time_remaining for c in fake.calls if c.method != "WatchJob"]
    assert all(0 < t <= 7.1 for t in unary if t is not None), unary
    watch = next(c for c in fake.calls if c.method == "WatchJob")
    assert watch.time_remaining is not None and 3500 < watch.time_remaining < 3700


def test_api_key_comes_from_the_environment_then_the_key_file(
    sync_target: str, fake: FakeGateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".pixmesh").mkdir()
    (tmp_path / ".pixmesh" / "api-key").write_text("from-file\n")
    with pixmesh.Client(sync_target) as c:
        c.list_operations()
    monkeypatch.setenv("PIXMESH_API_KEY", "from-env")
    with pixmesh.Client(sync_target) as c:
        c.list_operations()
    with pixmesh.Client(sync_target, api_key="explicit") as c:
        c.list_operations()
    keys = [call.metadata["authorization"] for call in fake.calls]
    assert keys == ["Bearer from-file", "Bearer from-env", "Bearer explicit"]


def test_no_key_sends_no_authorization_header(sync_target: str, fake: FakeGateway) -> None:
    with pixmesh.Client(sync_target) as c:
        c.list_operations()
    assert "authorization" not in fake.calls[0].metadata


def test_unavailable_is_retried_by_grpc_until_it_succeeds(
    sync_target: str, fake: FakeGateway
) -> None:
    with client(sync_target) as c:
        image = c.upload(b"x")
        job = c.create_job(image.image_id, [ops.extract_metadata()])
        fake.fail_next("GetJob", UNAVAILABLE, UNAVAILABLE)
        assert c.get_job(job.job_id).job_id == job.job_id
    assert fake.count("GetJob") == 3


def test_retries_are_bounded(sync_target: str, fake: FakeGateway) -> None:
    fake.fail_next("ListOperations", *[UNAVAILABLE] * 5)
    with client(sync_target, retries=2) as c, pytest.raises(errors.Unavailable):
        c.list_operations()
    assert fake.count("ListOperations") == 3


def test_retries_zero_disables_them(sync_target: str, fake: FakeGateway) -> None:
    fake.fail_next("ListOperations", UNAVAILABLE)
    with client(sync_target, retries=0) as c, pytest.raises(errors.Unavailable):
        c.list_operations()
    assert fake.count("ListOperations") == 1


def test_invalid_argument_is_not_retried(sync_target: str, fake: FakeGateway) -> None:
    fake.fail_next(
        "ListOperations", Abort(grpc.StatusCode.INVALID_ARGUMENT, "bad", "BAD"), UNAVAILABLE
    )
    with client(sync_target) as c, pytest.raises(errors.InvalidArgument):
        c.list_operations()
    assert fake.count("ListOperations") == 1


def test_create_job_retries_reuse_one_generated_idempotency_key(
    sync_target: str, fake: FakeGateway
) -> None:
    with client(sync_target) as c:
        image = c.upload(b"x")
        fake.fail_next("CreateJob", UNAVAILABLE, UNAVAILABLE)
        job = c.create_job(image.image_id, ["resize=10x10"])
        second = c.create_job(image.image_id, ["resize=10x10"])
    assert fake.count("CreateJob") == 4
    first_three, last = fake.attempt_keys[:3], fake.attempt_keys[3]
    assert first_three == [job.idempotency_key] * 3
    assert len(job.idempotency_key) == 32
    assert last == second.idempotency_key != job.idempotency_key  # a new call, a new request


def test_create_job_keeps_a_caller_key(sync_target: str, fake: FakeGateway) -> None:
    with client(sync_target) as c:
        image = c.upload(b"x")
        job = c.create_job(image.image_id, [ops.rotate(90)], idempotency_key="order-42")
    assert job.idempotency_key == "order-42"


def test_deadline_is_enforced(sync_target: str, fake: FakeGateway) -> None:
    fake.delays["ListOperations"] = 1.0
    with client(sync_target, timeout=0.2) as c, pytest.raises(errors.DeadlineExceeded):
        c.list_operations()


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, 2 * CHUNK_SIZE + CHUNK_SIZE // 2])
def test_upload_streams_chunks_that_reassemble_exactly(
    sync_target: str, fake: FakeGateway, size: int
) -> None:
    data = os.urandom(size)
    with client(sync_target) as c:
        c.upload(data, filename="photo.jpg")
    messages = fake.upload_messages[0]
    assert messages[0].info.filename == "photo.jpg"
    assert messages[0].info.content_type == "image/jpeg"
    chunks = [m.chunk for m in messages[1:]]
    assert all(0 < len(chunk) <= CHUNK_SIZE for chunk in chunks)
    assert len(chunks) == -(-size // CHUNK_SIZE)
    assert b"".join(chunks) == data


def test_upload_accepts_a_path_and_a_file_object(
    sync_target: str, fake: FakeGateway, tmp_path: Path
) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(b"png bytes")
    with client(sync_target) as c:
        by_path = c.upload(path)
        with path.open("rb") as f:
            by_file = c.upload(f)
        with pytest.raises(TypeError, match="binary mode"), path.open() as text:
            c.upload(text)  # type: ignore[arg-type]
    assert by_path.filename == by_file.filename == "cat.png"
    assert fake.images[by_path.image_id] == fake.images[by_file.image_id] == b"png bytes"


def test_a_file_name_that_is_not_utf8_is_sent_readable(
    sync_target: str, fake: FakeGateway, tmp_path: Path
) -> None:
    """A POSIX name may hold any bytes (Python keeps them as surrogates): protobuf could not
    encode it, the upload's stream was cancelled and `pixmesh batch DIR` ended with a traceback."""
    path = tmp_path / os.fsdecode(b"bad\xffname.png")
    path.write_bytes(b"png bytes")
    with client(sync_target) as c:
        image = c.upload(path)
        named = c.upload(b"png bytes", filename="odd\ud800.png")  # a lone surrogate
    assert image.filename == "bad\ufffdname.png"
    assert named.filename == "odd?.png"
    assert fake.images[image.image_id] == b"png bytes"


def test_upload_is_retried_by_hand_when_the_source_can_be_replayed(
    sync_target: str, fake: FakeGateway
) -> None:
    data = os.urandom(CHUNK_SIZE + 10)  # past gRPC's retry buffer
    fake.fail_next("UploadImage", UNAVAILABLE, UNAVAILABLE)
    source = io.BytesIO(b"prefix" + data)
    source.seek(6)  # a file object is replayed from where the caller left it
    with client(sync_target) as c:
        image = c.upload(source)
    assert fake.count("UploadImage") == 3
    assert fake.images[image.image_id] == data


class _Pipe(io.BytesIO):
    def seekable(self) -> bool:
        return False


def test_upload_from_a_pipe_is_not_retried(sync_target: str, fake: FakeGateway) -> None:
    fake.fail_next("UploadImage", UNAVAILABLE)
    with client(sync_target) as c, pytest.raises(errors.Unavailable):
        c.upload(_Pipe(b"stream"))
    assert fake.count("UploadImage") == 1


def test_watch_yields_every_state_and_stops_at_the_terminal_one(
    sync_target: str, fake: FakeGateway
) -> None:
    with client(sync_target) as c:
        image = c.upload(b"x")
        job = c.create_job(image.image_id, ["resize=10x10", "metadata"])
        states = [(j.state, round(j.progress, 2)) for j in c.watch_job(job.job_id)]
    assert states == [
        (Job.PENDING, 0),
        (Job.RUNNING, 0),
        (Job.RUNNING, 0.5),
        (Job.SUCCEEDED, 1.0),
    ]


@pytest.mark.parametrize("how", ["watch_breaks", "watch_truncations"])
def test_watch_resumes_a_broken_stream_without_repeating_a_state(
    sync_target: str, fake: FakeGateway, how: str
) -> None:
    with client(sync_target) as c:
        image = c.upload(b"x")
        job = c.create_job(image.image_id, ["resize=10x10", "metadata"])
        setattr(fake, how, 1)
        seen = list(c.watch_job(job.job_id))
    assert [j.state for j in seen] == [Job.PENDING, Job.RUNNING, Job.RUNNING, Job.SUCCEEDED]
    assert len({j.SerializeToString() for j in seen}) == 4
    assert fake.count("WatchJob") == 2


def test_watch_gives_up_after_the_retries(sync_target: str, fake: FakeGateway) -> None:
    with client(sync_target, retries=1) as c:
        image = c.upload(b"x")
        job = c.create_job(image.image_id, ["resize=10x10", "metadata"])
        fake.fail_next("WatchJob", UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
        with pytest.raises(errors.Unavailable):
            list(c.watch_job(job.job_id))
    assert fake.count("WatchJob") == 2  # the first try and one retry


def test_process_uploads_creates_and_follows_to_the_end(
    sync_target: str, fake: FakeGateway, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"jpeg")
    updates: list[Job] = []
    with client(sync_target) as c:
        job = c.process(photo, ["resize=800x600", ops.convert("webp")], on_update=updates.append)
        saved = c.save_output(job.job_id, tmp_path / "photo.webp")
    assert job.state == Job.SUCCEEDED
    assert [u.state for u in updates] == [Job.PENDING, Job.RUNNING, Job.SUCCEEDED]
    assert saved.read_bytes() == b"out:jpeg"
    assert not (tmp_path / "photo.webp.part").exists()


def test_process_rejects_a_bad_operation_before_uploading(
    sync_target: str, fake: FakeGateway
) -> None:
    with client(sync_target) as c, pytest.raises(ValueError, match="unknown operation"):
        c.process(b"x", ["sharpn=2"])
    assert fake.calls == []


def test_download_accepts_outputs_larger_than_grpcs_default_limit(
    sync_target: str, fake: FakeGateway
) -> None:
    data = os.urandom(5 << 20)  # gRPC clients refuse messages over 4 MiB unless told otherwise
    with client(sync_target) as c:
        job = c.process(data, ["resize=10x10"])
        assert c.download_output(job.job_id) == b"out:" + data


def test_list_jobs_walks_every_page(sync_target: str, fake: FakeGateway) -> None:
    with client(sync_target) as c:
        image = c.upload(b"x")
        created = [c.create_job(image.image_id, ["rotate=90"]).job_id for _ in range(5)]
        listed = [j.job_id for j in c.list_jobs(page_size=2)]
        pending = list(c.list_jobs("pending"))
        succeeded = list(c.list_jobs(Job.SUCCEEDED))
        with pytest.raises(ValueError, match="unknown job state"):
            list(c.list_jobs("done"))
    assert listed == created[::-1]
    assert fake.count("ListJobs") == 3 + 2
    assert len(pending) == 5
    assert succeeded == []


def test_cancel_job_returns_the_cancelled_job(sync_target: str, fake: FakeGateway) -> None:
    with client(sync_target) as c:
        image = c.upload(b"x")
        job = c.create_job(image.image_id, ["rotate=90"])
        assert c.cancel_job(job.job_id).state == Job.CANCELLED
        with pytest.raises(errors.FailedPrecondition) as info:
            c.cancel_job(job.job_id)
    assert info.value.reason == "JOB_FINISHED"


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="retries"):
        pixmesh.Client(retries=5)
    with pytest.raises(ValueError, match="deadline"):
        pixmesh.Client(timeout=0)


def test_create_and_plan_jobs_with_renditions(sync_target: str, fake: FakeGateway) -> None:
    thumb = ops.rendition("thumb", ["resize=200x200,fill", ops.convert("webp")])
    with client(sync_target) as c:
        image = c.upload(b"jpeg")
        job = c.create_job(
            image.image_id, renditions={"thumb": thumb.operations, "grey": ["grayscale"]}
        )
        planned = c.plan_job(image.image_id, ["flip"], renditions=[thumb])
        preset_only = c.create_job(image.image_id, preset="small")
        with pytest.raises(ValueError, match="operations, a preset or renditions"):
            c.create_job(image.image_id)
        with pytest.raises(ValueError, match="named twice"):
            c.plan_job(image.image_id, renditions=[thumb, thumb])
    sent = fake.create_requests[0]
    assert list(sent.operations) == [] and sent.preset == ""
    assert list(sent.renditions) == [
        thumb,
        ops.rendition("grey", [ops.grayscale()]),
    ]
    assert [r.name for r in job.renditions] == ["thumb", "grey"]
    assert list(fake.plan_requests[0].renditions) == [thumb]
    assert [(r.name, r.plan.output_format) for r in planned.plan.renditions] == [
        ("thumb", image_pb2.WEBP)
    ]
    assert fake.create_requests[1].preset == "small" and not preset_only.renditions
    assert fake.count("CreateJob") == 2 and fake.count("PlanJob") == 1  # nothing bad was sent


def test_outputs_download_by_index_or_rendition_name(
    sync_target: str, fake: FakeGateway, tmp_path: Path
) -> None:
    with client(sync_target) as c:
        job = c.process(b"jpeg", renditions={"small": ["resize=100x"], "large": []})
        assert job.state == Job.SUCCEEDED
        assert [(o.index, o.rendition) for o in job.outputs] == [(0, "small"), (1, "large")]
        assert c.download_output(job.job_id, 1) == b"out:jpeg:large"
        assert c.download_output(job.job_id, rendition="small") == b"out:jpeg:small"
        saved = c.save_output(job.job_id, tmp_path / "l.jpg", rendition="large")
        assert saved.read_bytes() == b"out:jpeg:large"
        with pytest.raises(errors.NotFound, match="no output of rendition 'medium'") as info:
            c.download_output(job.job_id, rendition="medium")
    assert info.value.reason == "OUTPUT_NOT_FOUND"
    assert "'small', 'large'" in info.value.message
    # The reason's own class, as an unknown index raises (README: `except pixmesh.OutputNotFound`).
    assert isinstance(info.value, errors.OutputNotFound)
