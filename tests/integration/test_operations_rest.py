"""Every imaging operation over REST through Envoy, the gateway and a worker, from its golden case.

Nothing here names an operation: the cases are the golden tests' single-operation cases on the
PNG sources (one per operation), run as renditions of a few jobs (one decode per job), and each
output must match its golden fingerprint. A new operation with a golden case is covered here, and
its ListOperations entry checked, without an edit.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
from google.protobuf import json_format
from PIL import Image

from services.imaging.ops import REGISTRY
from tests.integration.rest import Rest
from tests.services.imaging.test_golden import CASES, GOLDEN, LOSSY, TOLERANCE, png, png_rgba

pytestmark = pytest.mark.integration

SOURCES: list[Callable[[], bytes]] = [png, png_rgba]
RENDITIONS_PER_JOB = 10  # the imaging service's default max_renditions


def single_op_cases() -> dict[Callable[[], bytes], list[str]]:
    """Source -> golden cases of one operation on it, the first case of each operation."""
    seen: set[str] = set()
    by_source: dict[Callable[[], bytes], list[str]] = {source: [] for source in SOURCES}
    for case in sorted(CASES):
        source, operations = CASES[case]
        if source not in by_source or len(operations) != 1:
            continue
        name = operations[0].WhichOneof("op")
        if name is not None and name not in seen:
            seen.add(name)
            by_source[source].append(case)
    return by_source


def test_every_registered_operation_is_listed_with_its_parameters(rest: Rest) -> None:
    resp = rest.http.get("/v1/operations")
    assert resp.status_code == 200, resp.text
    listed = {op["name"]: op for op in resp.json()["operations"]}
    for name, spec in REGISTRY.items():
        assert listed[name]["service"] == "imaging"
        assert listed[name]["description"]
        params = {p["name"]: p for p in listed[name].get("parameters", [])}
        assert set(params) == {f.name for f in spec.message.DESCRIPTOR.fields}, name
        assert all(p["description"] and p["constraint"] for p in params.values()), name


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.__name__)
def test_every_operation_matches_its_golden_output_over_rest(
    rest: Rest, source: Callable[[], bytes]
) -> None:
    cases = single_op_cases()[source]
    image_id = rest.upload(source(), content_type="image/png")["image_id"]
    for start in range(0, len(cases), RENDITIONS_PER_JOB):
        chunk = cases[start : start + RENDITIONS_PER_JOB]
        renditions = [
            {
                "name": case,
                "operations": [
                    json_format.MessageToDict(op, preserving_proto_field_name=True)
                    for op in CASES[case][1]
                ],
            }
            for case in chunk
        ]
        resp = rest.http.post("/v1/jobs", json={"image_id": image_id, "renditions": renditions})
        assert resp.status_code == 200, resp.text
        job = rest.wait_job(resp.json()["job"]["job_id"])
        assert job["state"] == "SUCCEEDED", job
        outputs = {o["rendition"]: o for o in job["outputs"]}
        assert set(outputs) == set(chunk)
        for case in chunk:
            download = rest.download(job["job_id"], outputs[case]["index"])
            assert download.status_code == 200, download.text
            assert_matches_golden(case, Image.open(io.BytesIO(download.content)))


def assert_matches_golden(case: str, img: Image.Image) -> None:
    expected = json.loads((GOLDEN / f"{case}.json").read_text())
    assert (img.format, list(img.size)) == (expected["format"], expected["size"]), case
    rgba = img.convert("RGBA")
    thumb = list(rgba.resize((8, 8), Image.Resampling.BOX).tobytes())
    worst = max(abs(a - b) for a, b in zip(thumb, expected["thumb"], strict=True))
    assert worst <= TOLERANCE[expected["format"] in LOSSY], f"{case}: thumbnail differs by {worst}"
