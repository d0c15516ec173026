"""Orient end to end over REST through Envoy: the upload records the EXIF orientation, a job is
auto-oriented by default, and `orient IGNORE` first keeps the stored pixels (jobs, renditions,
PlanJob), while a misplaced orient is a 400 naming the field."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from tests.integration.rest import Json, Rest, reason

pytestmark = pytest.mark.integration

ORIENTATION = 0x0112
RED = (220, 30, 30)
IGNORE: Json = {"orient": {"mode": "IGNORE"}}
PNG: Json = {"convert": {"format": "PNG"}}


@pytest.fixture(scope="module")
def sideways() -> bytes:
    """Stored 400x300 with EXIF orientation 6 (shown turned 90° clockwise: 300x400). A red
    block marks the stored top-left corner, which shows at the top right."""
    stored = Image.new("RGB", (400, 300), (40, 90, 160))
    stored.paste(RED, (0, 0, 100, 60))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


@pytest.fixture(scope="module")
def sideways_image(rest: Rest, sideways: bytes) -> Json:
    return rest.upload(sideways)


def run_job(rest: Rest, image_id: str, operations: list[Json]) -> tuple[Json, Image.Image]:
    job = rest.wait_job(rest.create_job(image_id, operations)["job_id"])
    assert job["state"] == "SUCCEEDED", job
    resp = rest.download(job["job_id"], 0)
    assert resp.status_code == 200, resp.text
    out = Image.open(io.BytesIO(resp.content))
    out.load()
    return job, out


def is_red(img: Image.Image, x: int, y: int) -> bool:
    r, g, b = img.convert("RGB").getpixel((x, y))  # type: ignore[misc]
    return abs(r - RED[0]) < 30 and abs(g - RED[1]) < 30 and abs(b - RED[2]) < 30


def test_the_upload_records_the_orientation(rest: Rest, sideways_image: Json) -> None:
    assert sideways_image["orientation"] == 6
    assert (sideways_image["width"], sideways_image["height"]) == (300, 400)  # as displayed
    upright = io.BytesIO()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(upright, "JPEG")
    assert rest.upload(upright.getvalue())["orientation"] == 1


def test_ignore_keeps_the_stored_pixels_and_default_turns_them_upright(
    rest: Rest, sideways_image: Json
) -> None:
    image_id = sideways_image["image_id"]
    job, stored = run_job(rest, image_id, [IGNORE, PNG])
    assert [s["service"] for s in job["stages"]] == ["imaging"]
    assert stored.format == "PNG" and stored.size == (400, 300)
    assert (job["outputs"][0]["width"], job["outputs"][0]["height"]) == (400, 300)
    assert is_red(stored, 10, 10) and not is_red(stored, 390, 10)
    assert ORIENTATION not in stored.getexif()  # no tag left to turn it in a viewer

    job, upright = run_job(rest, image_id, [PNG])
    assert upright.size == (300, 400)
    assert (job["outputs"][0]["width"], job["outputs"][0]["height"]) == (300, 400)
    assert is_red(upright, 290, 10) and not is_red(upright, 10, 10)


def test_plan_job_uses_the_stored_size(rest: Rest, sideways_image: Json) -> None:
    body = {
        "image_id": sideways_image["image_id"],
        "operations": [IGNORE, {"resize": {"width": 200}}],
    }
    resp = rest.http.post("/v1/jobs:plan", json=body)
    assert resp.status_code == 200, resp.text
    plan = resp.json()["plan"]
    assert (plan["output_width"], plan["output_height"]) == (200, 150)
    body["operations"] = [{"resize": {"width": 200}}]
    plan = rest.http.post("/v1/jobs:plan", json=body).json()["plan"]
    assert (plan["output_width"], plan["output_height"]) == (200, 267)


def test_the_job_decides_for_its_renditions(rest: Rest, sideways_image: Json) -> None:
    body = {
        "image_id": sideways_image["image_id"],
        "operations": [IGNORE],
        "renditions": [
            {"name": "small", "operations": [{"resize": {"width": 100}}, PNG]},
            {"name": "same", "operations": [PNG]},
        ],
    }
    resp = rest.http.post("/v1/jobs", json=body)
    assert resp.status_code == 200, resp.text
    job = rest.wait_job(resp.json()["job"]["job_id"])
    assert job["state"] == "SUCCEEDED", job
    sizes = [(o["rendition"], o["width"], o["height"]) for o in job["outputs"]]
    assert sizes == [("small", 100, 75), ("same", 400, 300)]


def field_violations(resp: Any) -> list[str]:
    return [v["field"] for d in resp.json()["details"] for v in d.get("field_violations", [])]


@pytest.mark.parametrize(
    ("operations", "renditions", "field"),
    [
        ([PNG, IGNORE], [], "operations[1].orient"),
        ([PNG], [{"name": "a", "operations": [IGNORE]}], "renditions[0].operations[0].orient"),
    ],
)
def test_a_misplaced_orient_is_400_with_the_field(
    rest: Rest,
    sideways_image: Json,
    operations: list[Json],
    renditions: list[Json],
    field: str,
) -> None:
    body = {
        "image_id": sideways_image["image_id"],
        "operations": operations,
        "renditions": renditions,
    }
    for path in ("/v1/jobs", "/v1/jobs:plan"):
        resp = rest.http.post(path, json=body)
        assert resp.status_code == 400, resp.text
        assert field_violations(resp) == [field], resp.text
        assert reason(resp) == "INVALID_OPERATION"
