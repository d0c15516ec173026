"""The life of a job over REST/JSON through Envoy, as a curl user sees it: upload the raw bytes,
create a job, poll it, download the output."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from tests.integration import images
from tests.integration.rest import RESIZE_WEBP_METADATA, Json, Rest

pytestmark = pytest.mark.integration


def assert_camera_exif(metadata: Json) -> None:
    """The EXIF of images.camera_jpeg, as the REST JSON of ImageMetadata."""
    exif = metadata["exif"]
    assert exif["make"] == images.MAKE
    assert exif["model"] == images.MODEL
    assert exif["date_taken"] == images.TAKEN.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert exif["gps"]["latitude"] == pytest.approx(images.LATITUDE, abs=1e-4)
    assert exif["gps"]["longitude"] == pytest.approx(images.LONGITUDE, abs=1e-4)


def test_upload_sniffs_the_header(rest: Rest, photo: bytes) -> None:
    # The Content-Type says PNG: the gateway must trust the magic bytes, not the client.
    image = rest.upload(photo, content_type="image/png")
    assert image["image_id"].startswith("img_")
    assert image["format"] == "JPEG"
    assert (image["width"], image["height"]) == (1600, 1200)
    assert image["frame_count"] == 1
    assert image["size_bytes"] == str(len(photo))  # uint64 is a JSON string
    assert image["sha256"] == hashlib.sha256(photo).hexdigest()


def test_resize_convert_extract_metadata(rest: Rest, photo: bytes) -> None:
    image = rest.upload(photo)
    created = rest.create_job(image["image_id"], RESIZE_WEBP_METADATA)
    assert created["job_id"].startswith("job_")
    assert created["state"] in {"PENDING", "RUNNING"}
    # Resize and convert are one imaging stage: the image is not round-tripped through S3.
    assert [s["service"] for s in created["stages"]] == ["imaging", "metadata"]

    job = rest.wait_job(created["job_id"])
    assert job["state"] == "SUCCEEDED", job
    assert job["progress"] == 1
    assert [s["state"] for s in job["stages"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert "finished_at" in job

    (output,) = job["outputs"]
    assert output["format"] == "WEBP"
    assert output["content_type"] == "image/webp"
    assert (output["width"], output["height"]) == (800, 600)

    resp = rest.download(job["job_id"], 0)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/webp"
    assert len(resp.content) == int(output["size_bytes"])
    assert hashlib.sha256(resp.content).hexdigest() == output["sha256"]
    webp = Image.open(io.BytesIO(resp.content))
    assert webp.format == "WEBP"
    assert webp.size == (800, 600)
    webp.load()  # decodes whole
    assert "exif" not in webp.info  # metadata is stripped from outputs

    metadata = job["metadata"]
    assert metadata["format"] == "JPEG"  # the source, not the output
    assert (metadata["width"], metadata["height"]) == (1600, 1200)
    assert_camera_exif(metadata)


def test_download_of_a_missing_output_is_404(rest: Rest, photo_id: str) -> None:
    job = rest.wait_job(rest.create_job(photo_id, [{"convert": {"format": "PNG"}}])["job_id"])
    assert job["state"] == "SUCCEEDED", job
    resp = rest.download(job["job_id"], 1)
    assert resp.status_code == 404
    assert resp.json()["code"] == 5  # NOT_FOUND


def test_list_operations(rest: Rest) -> None:
    resp = rest.http.get("/v1/operations")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    services = {op["name"]: op["service"] for op in body["operations"]}
    assert services["resize"] == "imaging"
    assert services["convert"] == "imaging"
    assert services["extract_metadata"] == "metadata"
    assert services["denoise"] == "inference"
    assert int(body["limits"]["max_pixels"]) > 0
    assert "WEBP" in body["output_formats"]
    assert "JPEG" in body["input_formats"]


def test_unknown_path_is_404(rest: Rest) -> None:
    assert rest.http.get("/v1/nothing-here").status_code == 404
