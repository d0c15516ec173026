"""PlanJob, presets and `convert.auto` over REST through Envoy, as a curl user sees them."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from PIL import Image, ImageChops, features

from deploy.local import Stack
from tests.integration.rest import Json, Rest, reason

pytestmark = pytest.mark.integration
THUMB = [{"resize": {"width": 200, "height": 200, "mode": "FILL"}}, {"convert": {"auto": True}}]


def plan(rest: Rest, body: Json, accept: str = "*/*") -> Json:
    resp = rest.http.post("/v1/jobs:plan", json=body, headers={"accept": accept})
    assert resp.status_code == 200, resp.text
    result: Json = resp.json()
    return result


def test_plan_job_predicts_the_output_and_creates_no_job(rest: Rest, photo_id: str) -> None:
    before = sum(1 for _ in rest.list_all())
    ops = [
        {"resize": {"width": 800, "height": 800, "mode": "FIT"}},
        {"convert": {"format": "WEBP"}},
    ]
    result = plan(rest, {"image_id": photo_id, "operations": ops})
    assert result["image"]["image_id"] == photo_id
    p = result["plan"]
    assert (p["output_width"], p["output_height"], p["output_format"]) == (800, 600, "WEBP")
    assert [(o["service"], o["width"], o["height"]) for o in p["operations"]] == [
        ("imaging", 800, 600),
        ("imaging", 800, 600),
    ]
    cost = p["estimated_cost"]
    assert cost["decoded_megapixels"] == pytest.approx(1.92)
    assert int(cost["cpu_ms"]) > 0  # uint64: a JSON string
    assert sum(1 for _ in rest.list_all()) == before


def test_create_job_runs_imaging_exact_checks_before_the_job_exists(
    rest: Rest, photo_id: str
) -> None:
    # The crop fits the limits but not this 1600x1200 image: only the header can tell.
    resp = rest.create_job_response(
        photo_id, [{"crop": {"x": 1590, "y": 0, "width": 100, "height": 100}}]
    )
    assert resp.status_code == 400, resp.text
    fields = [v["field"] for d in resp.json()["details"] for v in d.get("field_violations", [])]
    assert fields and fields[0].startswith("operations[0].crop")
    # A relative crop, which the gateway's coarse checks used to refuse, is planned exactly.
    ratio = {"crop": {"width_ratio": 0.5, "height_ratio": 0.5}}
    assert plan(rest, {"image_id": photo_id, "operations": [ratio]})["plan"]["output_width"] == 800


def test_auto_format_is_resolved_from_accept_when_the_job_is_created(
    rest: Rest, photo_id: str
) -> None:
    ops = [{"resize": {"width": 320}}, {"convert": {"auto": True}}]
    job = rest.create_job(photo_id, ops, headers={"accept": "image/webp,*/*;q=0.8"})
    assert job["operations"][1]["convert"]["format"] == "WEBP"
    assert job["operations"][1]["convert"].get("auto", False) is False
    done = rest.wait_job(job["job_id"])
    assert done["state"] == "SUCCEEDED", done
    out = rest.download(job["job_id"])
    assert out.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(out.content)).size == (320, 240)
    # curl's */* names no format: the input's is kept.
    assert plan(rest, {"image_id": photo_id, "operations": ops})["plan"]["output_format"] == "JPEG"
    if features.check("avif"):
        avif = plan(rest, {"image_id": photo_id, "operations": ops}, "image/avif,image/webp")
        assert avif["plan"]["output_format"] == "AVIF"


@pytest.fixture
def with_presets(stack: Stack) -> Iterator[None]:
    stack.restart_service("gateway", {"PIXMESH_PRESETS": json.dumps({"thumb": THUMB})})
    try:
        yield
    finally:
        stack.restart_service("gateway")


def test_presets_are_listed_and_usable_by_name(
    rest: Rest, photo_id: str, with_presets: None
) -> None:
    listed = rest.http.get("/v1/operations").json()["presets"]
    assert [p["name"] for p in listed] == ["thumb"]
    resize, convert = listed[0]["operations"]
    assert (resize["resize"]["width"], resize["resize"]["mode"]) == (200, "FILL")
    assert convert["convert"]["auto"] is True
    planned = plan(rest, {"image_id": photo_id, "preset": "thumb"}, accept="image/webp")["plan"]
    assert (planned["output_width"], planned["output_height"]) == (200, 200)
    resp = rest.http.post(
        "/v1/jobs",
        json={"image_id": photo_id, "preset": "thumb", "operations": [{"grayscale": {}}]},
        headers={"accept": "image/webp"},
    )
    assert resp.status_code == 200, resp.text
    job = resp.json()["job"]
    assert [next(iter(op)) for op in job["operations"]] == ["resize", "convert", "grayscale"]
    done = rest.wait_job(job["job_id"])
    assert done["state"] == "SUCCEEDED", done
    out = Image.open(io.BytesIO(rest.download(job["job_id"]).content))
    assert (out.format, out.size) == ("WEBP", (200, 200))
    r, g, b = out.convert("RGB").split()
    assert (
        max(
            ImageChops.difference(r, g).getextrema()[1], ImageChops.difference(g, b).getextrema()[1]
        )
        <= 4
    )  # grey
    unknown = rest.http.post("/v1/jobs:plan", json={"image_id": photo_id, "preset": "nope"})
    assert (unknown.status_code, reason(unknown)) == (400, "UNKNOWN_PRESET")


def test_sdk_plans_a_job(grpc_target: str, api_key: str, photo_id: str) -> None:
    import pixmesh
    from pixmesh import ops
    from pixmesh.common.v1 import image_pb2

    with pixmesh.Client(grpc_target, api_key) as client:
        resp = client.plan_job(photo_id, [ops.resize(400, 400), ops.convert("png")])
    assert (resp.plan.output_width, resp.plan.output_height) == (400, 300)
    assert resp.plan.output_format == image_pb2.PNG


def test_plan_job_predicts_the_png_a_denoise_writes_for_a_gif(rest: Rest) -> None:
    """The inference service writes a still GIF as PNG: the plan says so, not GIF."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "GIF")
    gif_id = rest.upload(buf.getvalue(), "image/gif")["image_id"]
    denoise = {"denoise": {"auto": True}}
    p = plan(rest, {"image_id": gif_id, "operations": [denoise]})["plan"]
    assert (p["output_format"], p["output_width"]) == ("PNG", 64)
    then_resize = [denoise, {"resize": {"width": 32}}]
    assert plan(rest, {"image_id": gif_id, "operations": then_resize})["plan"]["output_format"] == (
        "PNG"
    )
