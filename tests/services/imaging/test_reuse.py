"""Reuse with the real pipeline (child processes) and the real object storage (SeaweedFS of the
session `infra`): PIXMESH_WEBP_EFFORT changed between two identical tasks gives new bytes under
a new key, and every record describes the bytes its key holds."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from pydantic import SecretStr

from deploy.local import Stack
from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.operations_pb2 import Convert, Resize
from pixmesh.events.v1 import events_pb2
from services.imaging.consumers import processor, resolve
from services.imaging.isolation import ProcessPool
from services.imaging.limits import Limits
from services.imaging.pipeline import run
from services.imaging.resolve import candidate_formats, resolved_operations
from services.imaging.service import ImagingProcessor, Source
from services.runtime.errors import NotFound
from services.runtime.settings import ServiceSettings, WorkerSettings
from services.runtime.storage import Storage, input_key
from services.runtime.worker import StageResult, TaskWorker
from tests.services.runtime.test_worker_renditions import FakeBus, delivery

from .samples import encode, ops, scene

pytestmark = pytest.mark.integration


@pytest.fixture
def storage(infra: Stack) -> Storage:
    settings = ServiceSettings(
        s3_endpoint=infra.s3_endpoint,
        s3_bucket=infra.s3_bucket,
        s3_access_key=SecretStr(infra.s3_access_key),
        s3_secret_key=SecretStr(infra.s3_secret_key),
    )
    return Storage.from_settings(settings)


class Worker:
    """A TaskWorker of the imaging service with one WebP effort, counting pipeline runs; as
    deployed, the pipeline child reads the input itself from a presigned URL."""

    def __init__(self, pool: ProcessPool, storage: Storage, effort: int) -> None:
        imaging = ImagingProcessor(pool, Limits(), webp_effort=effort)
        run = processor(imaging, lambda key: storage.presign_get(key, "", 60))
        self.runs = 0

        async def counted(task: events_pb2.Task, data: bytes) -> StageResult:
            self.runs += 1
            return await run(task, data)

        self.bus = FakeBus()
        self.worker = TaskWorker(
            self.bus,  # type: ignore[arg-type]
            storage,
            WorkerSettings(service_name="imaging"),
            counted,
            resolve=resolve(imaging),
            reads_input=True,
        )

    async def run(self, task: events_pb2.Task) -> events_pb2.TaskCompleted:
        self.bus.published.clear()
        await self.worker.handle(delivery(task))
        return self.bus.completed()


async def test_a_changed_webp_effort_gives_new_bytes_under_a_new_key_and_true_records(
    pool: ProcessPool, storage: Storage
) -> None:
    source = encode(scene(640, 480), "PNG") + uuid.uuid4().bytes  # a source of its own
    sha = hashlib.sha256(source).hexdigest()
    await storage.put(input_key(sha), source, "image/png")
    task = events_pb2.Task(
        task_id=f"t-{sha[:8]}",
        job_id="job_reuse",
        input_key=input_key(sha),
        source=image_pb2.Image(sha256=sha, format=image_pb2.PNG),
        operations=ops(Resize(width=320), Convert(format=image_pb2.WEBP)),
    )

    default = Worker(pool, storage, effort=4)
    first = await default.run(task)
    fast = Worker(pool, storage, effort=0)
    second = await fast.run(task)

    assert default.runs == fast.runs == 1
    assert second.output_key != first.output_key
    assert second.output.sha256 != first.output.sha256
    for done, effort in ((first, 4), (second, 0)):
        stored = await storage.get(done.output_key)
        assert hashlib.sha256(stored).hexdigest() == done.output.sha256
        assert len(stored) == done.output.size_bytes
        made = done.output.provenance
        assert not made.reused and made.source_sha256 == sha
        assert made.engine["default.webp_effort"] == str(effort)
        assert made.operations[-1].convert.effort == effort
        assert made.operations[-1].convert.quality == 80  # the default, filled in

    # The same task again on each: found by HEAD, nothing downloaded or computed.
    again = await default.run(task)
    again_fast = await fast.run(task)
    assert default.runs == fast.runs == 1
    assert (again.output_key, again.output.sha256) == (first.output_key, first.output.sha256)
    assert (again_fast.output_key, again_fast.output.sha256) == (
        second.output_key,
        second.output.sha256,
    )
    assert again.output.provenance.reused and again_fast.output.provenance.reused
    assert (again.output.width, again.output.height) == (320, 240)
    assert again.output.format == image_pb2.WEBP and again.output.content_type == "image/webp"
    assert again.output.provenance.operations[-1].convert.effort == 4

    # reuse: false computes again; the bytes are the same, so the record is too.
    task.recompute = True
    forced = await default.run(task)
    assert default.runs == 2 and not forced.output.provenance.reused
    assert (forced.output_key, forced.output.sha256) == (first.output_key, first.output.sha256)


async def test_a_child_reading_a_missing_input_fails_not_found(
    pool: ProcessPool, storage: Storage
) -> None:
    imaging = ImagingProcessor(pool, Limits())
    url = storage.presign_get(input_key("0" * 64), "", 60)
    with pytest.raises(NotFound):
        await imaging.process(Source(url), ops(Resize(width=10)), None)


def test_candidate_formats_follow_the_last_convert_else_the_source() -> None:
    webp = ops(Convert(format=image_pb2.WEBP))
    assert candidate_formats(webp, None, None) == [image_pb2.WEBP]
    assert candidate_formats(ops(Resize(width=10)), image_pb2.PNG, None) == [image_pb2.PNG]
    # A HEIF becomes JPEG, or PNG when it has alpha: known after decoding only.
    assert candidate_formats([], image_pb2.HEIF, None) == [image_pb2.JPEG, image_pb2.PNG]
    # A later stage's input format is not known: no lookup without a Convert's format.
    assert candidate_formats(ops(Resize(width=10)), None, None) == []
    assert candidate_formats([], None, image_pb2.WEBP) == [image_pb2.WEBP]


def test_resolved_operations_fill_every_encoder_default() -> None:
    [resize, convert] = resolved_operations(ops(Resize(width=10)), image_pb2.AVIF, 4)
    assert resize.resize.width == 10
    assert (convert.convert.format, convert.convert.quality, convert.convert.speed) == (
        image_pb2.AVIF,
        60,
        8,
    )
    [png] = resolved_operations(ops(Convert(format=image_pb2.PNG)), image_pb2.PNG, 4)
    assert png.convert.HasField("compression_level") and png.convert.compression_level == 6
    [lossless] = resolved_operations(
        ops(Convert(format=image_pb2.WEBP, lossless=True, effort=1)), image_pb2.WEBP, 4
    )
    assert lossless.convert.quality == 0 and lossless.convert.effort == 1


@pytest.mark.parametrize("fmt", [image_pb2.JPEG, image_pb2.WEBP, image_pb2.PNG, image_pb2.AVIF])
def test_convert_provenance_embeds_a_small_xmp(fmt: image_pb2.ImageFormat.ValueType) -> None:
    facts = {"sourceSha256": "ab" * 32, "inputKey": "inputs/" + "ab" * 32, "keyScheme": "2"}
    facts["engine.pillow"] = "13.0.0"
    pipeline = ops(Resize(width=64), Convert(format=fmt, provenance=True))
    out = run(encode(scene(), "PNG"), pipeline, limits=Limits(), provenance=facts).image
    start, end = out.data.find(b"<x:xmpmeta"), out.data.find(b"</x:xmpmeta>")
    assert 0 <= start < end
    packet = out.data[start : end + len(b"</x:xmpmeta>")]
    assert len(packet) < 1024
    text = packet.decode()
    assert 'pixmesh:sourceSha256="' + "ab" * 32 in text and 'pixmesh:keyScheme="2"' in text
    assert "pillow=13.0.0" in text and '"width":64' in text
    # Without the option, nothing is embedded (the same facts given).
    plain = run(
        encode(scene(), "PNG"),
        ops(Resize(width=64), Convert(format=fmt)),
        limits=Limits(),
        provenance=facts,
    ).image
    assert b"xmpmeta" not in plain.data and len(plain.data) < len(out.data)
