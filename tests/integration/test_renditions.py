"""Renditions end to end: one job, one source decoded once, several named outputs, over REST
through Envoy and through the SDK, against the real stack (gateway, jobs, imaging workers)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops

from tests.integration.rest import Json, Rest, reason

pytestmark = pytest.mark.integration

# The test photo is 1600x1200; the job first cuts a centred 1200x900 out of it (rows 150..1049).
SHARED = [{"crop": {"width": 1200, "height": 900, "gravity": {"anchor": "CENTER"}}}]
RENDITIONS: list[Json] = [
    {
        "name": "thumb",
        "operations": [
            {"resize": {"width": 200, "height": 200, "mode": "FILL"}},
            {"convert": {"auto": True}},  # WebP: the request accepts it
        ],
    },
    {
        "name": "medium",
        "operations": [
            {"resize": {"width": 800}},
            {"convert": {"format": "JPEG", "quality": 80}},
        ],
    },
    {
        "name": "corner",
        "operations": [
            {"crop": {"x": 0, "y": 0, "width": 300, "height": 300}},
            {"convert": {"format": "PNG"}},
        ],
    },
]
# name -> (width, height, format, content type)
EXPECTED = {
    "thumb": (200, 200, "WEBP", "image/webp"),
    "medium": (800, 600, "JPEG", "image/jpeg"),
    "corner": (300, 300, "PNG", "image/png"),
}


def post(rest: Rest, path: str, body: Json, **headers: str) -> Any:
    return rest.http.post(path, json=body, headers={"accept": "image/webp", **headers})


def field_violations(resp: Any) -> list[str]:
    return [v["field"] for d in resp.json()["details"] for v in d.get("field_violations", [])]


def test_a_job_with_three_renditions_over_rest(rest: Rest, photo_id: str) -> None:
    body = {"image_id": photo_id, "operations": SHARED, "renditions": RENDITIONS}
    created = post(rest, "/v1/jobs", body)
    assert created.status_code == 200, created.text
    job = created.json()["job"]
    # Stored as they will run: `auto` resolved from Accept in the rendition too.
    assert [r["name"] for r in job["renditions"]] == ["thumb", "medium", "corner"]
    assert job["renditions"][0]["operations"][1]["convert"]["format"] == "WEBP"
    # The shared crop and every rendition are one imaging stage: the source is decoded once.
    assert [s["service"] for s in job["stages"]] == ["imaging"]
    assert [r["name"] for r in job["stages"][0]["renditions"]] == ["thumb", "medium", "corner"]

    done = rest.wait_job(job["job_id"])
    assert done["state"] == "SUCCEEDED", done
    outputs = done["outputs"]
    assert [(o["index"], o["rendition"]) for o in outputs] == [
        (0, "thumb"),
        (1, "medium"),
        (2, "corner"),
    ]
    for output in outputs:
        width, height, fmt, content_type = EXPECTED[output["rendition"]]
        assert (output["width"], output["height"], output["format"]) == (width, height, fmt)
        assert output["content_type"] == content_type
        assert output["download_path"] == f"/v1/jobs/{job['job_id']}/outputs/{output['index']}"
        resp = rest.http.get(output["download_path"])
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == content_type
        assert hashlib.sha256(resp.content).hexdigest() == output["sha256"]
        image = Image.open(io.BytesIO(resp.content))
        assert (image.format, image.size) == (fmt, (width, height))
    assert rest.download(job["job_id"], 3).status_code == 404
    # The corner rendition ran on the shared crop's result, not on the source: its top row is
    # row 150 of the photo, whose red channel (a top-to-bottom ramp) is about 150/1200 of 255.
    corner = Image.open(io.BytesIO(rest.download(job["job_id"], 2).content)).convert("RGB")
    top_red = corner.getpixel((150, 0))
    assert isinstance(top_red, tuple)
    assert 20 <= top_red[0] <= 45, top_red


def test_plan_job_returns_a_plan_per_rendition_and_creates_nothing(
    rest: Rest, photo_id: str
) -> None:
    before = sum(1 for _ in rest.list_all())
    renditions = [*RENDITIONS, {"name": "as-is"}]
    body = {"image_id": photo_id, "operations": SHARED, "renditions": renditions}
    resp = post(rest, "/v1/jobs:plan", body)
    assert resp.status_code == 200, resp.text
    plan = resp.json()["plan"]
    assert (plan["output_width"], plan["output_height"]) == (1200, 900)  # the shared part
    planned = {r["name"]: r["plan"] for r in plan["renditions"]}
    assert list(planned) == ["thumb", "medium", "corner", "as-is"]
    for name, (width, height, fmt, _) in EXPECTED.items():
        p = planned[name]
        assert (p["output_width"], p["output_height"], p["output_format"]) == (width, height, fmt)
    # Without a convert a rendition keeps the format the shared operations produce.
    as_is = planned["as-is"]
    assert (as_is["output_width"], as_is["output_height"], as_is["output_format"]) == (
        1200,
        900,
        "JPEG",
    )
    assert int(plan["estimated_cost"]["cpu_ms"]) >= max(
        int(p["estimated_cost"]["cpu_ms"]) for p in planned.values()
    )
    assert sum(1 for _ in rest.list_all()) == before


def test_renditions_after_another_services_operation_get_their_own_imaging_stage(
    rest: Rest, photo_id: str
) -> None:
    body = {
        "image_id": photo_id,
        "operations": [{"extract_metadata": {}}],
        "renditions": [
            {"name": "same"},  # no operations: the source, re-encoded in its own format
            {"name": "small", "operations": [{"resize": {"width": 160}}]},
        ],
    }
    created = post(rest, "/v1/jobs", body)
    assert created.status_code == 200, created.text
    job = created.json()["job"]
    assert [s["service"] for s in job["stages"]] == ["metadata", "imaging"]
    done = rest.wait_job(job["job_id"])
    assert done["state"] == "SUCCEEDED", done
    assert done["metadata"]["width"] == 1600
    sizes = [(o["rendition"], o["width"], o["height"], o["format"]) for o in done["outputs"]]
    assert sizes == [("same", 1600, 1200, "JPEG"), ("small", 160, 120, "JPEG")]
    small = Image.open(io.BytesIO(rest.download(job["job_id"], 1).content))
    assert (small.format, small.size) == ("JPEG", (160, 120))


@pytest.mark.parametrize(
    ("renditions", "field", "why"),
    [
        (
            [{"name": "a"}, {"name": "b", "operations": [{"denoise": {"auto": True}}]}],
            "renditions[1].operations[0]",
            "NOT_A_RENDITION_OPERATION",
        ),
        ([{"name": "a"}, {"name": "a"}], "renditions[1].name", "DUPLICATE_RENDITION"),
        ([{"name": "Thumb"}], "renditions[0].name", "BAD_RENDITION_NAME"),
        ([{"name": f"r{i}"} for i in range(11)], "renditions", "TOO_MANY_RENDITIONS"),
        ([{"name": "a", "preset": "nope"}], "renditions[0].preset", "UNKNOWN_PRESET"),
        (
            [{"name": "a", "operations": [{"grayscale": {}}] * 16}],
            "renditions[0].operations",
            "TOO_MANY_OPERATIONS",
        ),
    ],
)
def test_bad_renditions_are_400_with_the_field(
    rest: Rest, photo_id: str, renditions: list[Json], field: str, why: str
) -> None:
    for path in ("/v1/jobs", "/v1/jobs:plan"):
        body = {"image_id": photo_id, "operations": SHARED, "renditions": renditions}
        resp = post(rest, path, body)
        assert resp.status_code == 400, resp.text
        assert (field_violations(resp)[0], reason(resp)) == (field, why)


def test_imaging_checks_each_rendition_against_the_image(rest: Rest, photo_id: str) -> None:
    # Fits every limit, but not the 1200x900 the shared crop leaves: only imaging can tell.
    crop = {"crop": {"x": 1100, "y": 0, "width": 200, "height": 200}}
    body = {
        "image_id": photo_id,
        "operations": SHARED,
        "renditions": [{"name": "ok"}, {"name": "bad", "operations": [crop]}],
    }
    before = sum(1 for _ in rest.list_all())
    resp = post(rest, "/v1/jobs", body)
    assert resp.status_code == 400, resp.text
    assert field_violations(resp)[0].startswith("renditions[1].operations[0].crop"), resp.text
    assert sum(1 for _ in rest.list_all()) == before


def test_an_idempotency_key_covers_the_renditions(rest: Rest, photo_id: str) -> None:
    body: Json = {
        "image_id": photo_id,
        "renditions": RENDITIONS[1:],
        "idempotency_key": f"renditions-{photo_id}",
    }
    first = post(rest, "/v1/jobs", body)
    again = post(rest, "/v1/jobs", body)
    assert first.status_code == again.status_code == 200, again.text
    assert first.json()["job"]["job_id"] == again.json()["job"]["job_id"]
    other = post(rest, "/v1/jobs", {**body, "renditions": RENDITIONS[:1]})
    assert (other.status_code, reason(other)) == (400, "IDEMPOTENCY_KEY_REUSED")


def test_the_sdk_makes_and_downloads_renditions(
    grpc_target: str, api_key: str, photo_path: Path, photo_id: str, tmp_path: Path
) -> None:
    import pixmesh
    from pixmesh import ops
    from pixmesh.common.v1 import image_pb2

    renditions = {
        "thumb": [ops.resize(200, 200, "fill"), ops.convert("webp")],
        "medium": ["resize=800x", "convert=jpeg:80"],
        "corner": [ops.crop(0, 0, 300, 300), ops.convert("png")],
    }
    with pixmesh.Client(grpc_target, api_key) as client:
        plan = client.plan_job(photo_id, ["grayscale"], renditions=renditions).plan
        assert [(r.name, r.plan.output_width, r.plan.output_height) for r in plan.renditions] == [
            ("thumb", 200, 200),
            ("medium", 800, 600),
            ("corner", 300, 300),
        ]
        job = client.process(photo_path, ["grayscale"], renditions=renditions)
        assert job.state == job.SUCCEEDED, job
        assert [o.rendition for o in job.outputs] == ["thumb", "medium", "corner"]
        formats = {o.rendition: o.format for o in job.outputs}
        assert formats == {
            "thumb": image_pb2.WEBP,
            "medium": image_pb2.JPEG,
            "corner": image_pb2.PNG,
        }
        for output in job.outputs:
            by_name = client.download_output(job.job_id, rendition=output.rendition)
            assert by_name == client.download_output(job.job_id, output.index)
            assert hashlib.sha256(by_name).hexdigest() == output.sha256
            image = Image.open(io.BytesIO(by_name))
            assert image.size == (output.width, output.height)
            assert _is_grey(image), output.rendition  # the shared grayscale ran
        saved = client.save_output(job.job_id, tmp_path / "thumb.webp", rendition="thumb")
        assert Image.open(saved).format == "WEBP"
        with pytest.raises(pixmesh.errors.InvalidArgument) as info:
            client.create_job(photo_id, renditions={"a": ["flip"], "b": ["denoise=auto"]})
        assert info.value.violations[0].field == "renditions[1].operations[0]"


def _is_grey(image: Image.Image) -> bool:
    r, g, b = image.convert("RGB").split()
    diffs = (ImageChops.difference(r, g), ImageChops.difference(g, b))
    return max(d.getextrema()[1] for d in diffs) <= 6


def test_the_cli_saves_one_file_per_rendition(
    grpc_target: str, api_key: str, photo_path: Path, tmp_path: Path
) -> None:
    from tests.integration.test_sdk_cli import _cli

    env = {"PIXMESH_TARGET": grpc_target, "PIXMESH_API_KEY": api_key}
    out = tmp_path / "out"
    result = _cli(
        [
            "process", str(photo_path), "--op", "flip",
            "--rendition", "thumb=resize=200x200,fill;convert=webp",
            "--rendition", "medium=resize=800x", "-o", str(out),
        ],
        tmp_path,
        env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["photo-medium.jpg", "photo-thumb.webp"]
    assert Image.open(out / "photo-thumb.webp").size == (200, 200)
    assert Image.open(out / "photo-medium.jpg").size == (800, 600)
    job_id = next(line.split()[0] for line in result.stderr.splitlines() if "SUCCEEDED" in line)
    again = tmp_path / "again"
    result = _cli(["download", job_id, "--all", "-o", str(again)], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in again.iterdir()) == [
        f"{job_id}-medium.jpg",
        f"{job_id}-thumb.webp",
    ]
    assert (again / f"{job_id}-thumb.webp").read_bytes() == (out / "photo-thumb.webp").read_bytes()
