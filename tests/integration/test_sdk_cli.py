"""The same pipeline through the Python SDK (sync and asyncio, native gRPC through Envoy) and
through the `pixmesh` CLI run as a user would run it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from PIL import Image

import pixmesh
from pixmesh import errors, ops
from pixmesh.common.v1.image_pb2 import WEBP
from pixmesh.common.v1.job_pb2 import Job, Stage
from pixmesh.common.v1.metadata_pb2 import ImageMetadata
from tests.integration import images

pytestmark = pytest.mark.integration

PIPELINE = [ops.resize(800, 600), ops.convert("webp"), ops.extract_metadata()]
TERMINAL = {Job.SUCCEEDED, Job.FAILED, Job.CANCELLED}


def assert_webp_800x600(data: bytes) -> None:
    img = Image.open(io.BytesIO(data))
    assert img.format == "WEBP"
    assert img.size == (800, 600)
    img.load()


def assert_camera_metadata(md: ImageMetadata) -> None:
    assert (md.width, md.height) == (1600, 1200)
    assert md.exif.make == images.MAKE
    assert md.exif.model == images.MODEL
    assert md.exif.date_taken.ToDatetime() == images.TAKEN
    assert md.exif.gps.latitude == pytest.approx(images.LATITUDE, abs=1e-4)
    assert md.exif.gps.longitude == pytest.approx(images.LONGITUDE, abs=1e-4)


def assert_succeeded(job: Job) -> None:
    assert job.state == Job.SUCCEEDED, job
    assert [s.state for s in job.stages] == [Stage.SUCCEEDED, Stage.SUCCEEDED]
    (output,) = job.outputs
    assert (output.format, output.width, output.height) == (WEBP, 800, 600)
    assert_camera_metadata(job.metadata)


def test_client_process(grpc_target: str, api_key: str, photo: bytes) -> None:
    updates: list[Job] = []
    with pixmesh.Client(grpc_target, api_key, timeout=30, watch_timeout=60) as client:
        job = client.process(photo, PIPELINE, filename="photo.jpg", on_update=updates.append)
        assert_succeeded(job)
        assert_webp_800x600(client.download_output(job.job_id, 0))
    assert updates[-1] == job
    assert all(u.state not in TERMINAL for u in updates[:-1])  # one terminal state, at the end


def test_client_step_by_step(
    grpc_target: str, api_key: str, photo: bytes, photo_id: str, tmp_path: Path
) -> None:
    with pixmesh.Client(grpc_target, api_key, timeout=30, watch_timeout=60) as client:
        # Uploads are deduplicated per tenant by content: the same bytes, the same image.
        assert client.upload(photo).image_id == photo_id
        unique = images.camera_jpeg(1600, 1200, description=uuid.uuid4().hex)
        image = client.upload(unique, "holiday.jpg")
        assert image.image_id != photo_id
        assert (image.width, image.height, image.filename) == (1600, 1200, "holiday.jpg")

        created = client.create_job(image.image_id, ["resize=800x600", "convert=webp", "metadata"])
        assert created.image_id == image.image_id
        updates = list(client.watch_job(created.job_id))
        assert updates, "watch_job yielded nothing"
        job = updates[-1]
        assert_succeeded(job)
        assert client.get_job(job.job_id) == job
        saved = client.save_output(job.job_id, tmp_path / "out.webp")
        assert_webp_800x600(saved.read_bytes())


async def test_async_client_process(grpc_target: str, api_key: str, photo: bytes) -> None:
    async with pixmesh.AsyncClient(grpc_target, api_key, timeout=30, watch_timeout=60) as client:
        job = await client.process(photo, PIPELINE)
        assert_succeeded(job)
        assert_webp_800x600(await client.download_output(job.job_id))
        ids = [j.job_id async for j in client.list_jobs("succeeded", page_size=5)]
        assert job.job_id in ids


def test_client_without_key_is_unauthenticated(
    grpc_target: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PIXMESH_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .pixmesh/api-key either
    with pixmesh.Client(grpc_target, timeout=10) as client, pytest.raises(errors.Unauthenticated):
        client.list_operations()


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("pixmesh")  # the console script next to our python
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "pixmesh.cli"]
    return subprocess.run(
        [*argv, *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_cli_process(grpc_target: str, api_key: str, photo_path: Path, tmp_path: Path) -> None:
    env = {"PIXMESH_TARGET": grpc_target, "PIXMESH_API_KEY": api_key}
    out = tmp_path / "out"
    result = _cli(
        [
            "process",
            str(photo_path),
            "--op",
            "resize=800x600",
            "--op",
            "convert=webp",
            "-o",
            str(out),
        ],
        tmp_path,
        env,
    )
    assert result.returncode == 0, result.stderr
    written = out / "photo.webp"
    assert [p.name for p in out.iterdir()] == [written.name]
    assert_webp_800x600(written.read_bytes())
    assert str(written) in result.stdout


def test_cli_reports_a_bad_key(grpc_target: str, photo_path: Path, tmp_path: Path) -> None:
    env = {"PIXMESH_TARGET": grpc_target, "PIXMESH_API_KEY": "pm_not_a_real_key"}
    result = _cli(
        ["process", str(photo_path), "--op", "convert=png", "-o", str(tmp_path)], tmp_path, env
    )
    assert result.returncode == 1
    assert "UNAUTHENTICATED" in result.stderr
