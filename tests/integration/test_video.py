"""Videos end to end over REST through Envoy, against the real stack: an MP4 upload recorded as
kind VIDEO, poster frames checked against frames decoded independently, BEST_NEAR skipping a
black segment, an animated preview of the asked length, and the hostile video corpus (clear
permanent failures, the worker keeps serving)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploy.local import Stack
from tests.integration.rest import Json, Rest, reason
from tests.services.imaging import videos

pytestmark = pytest.mark.integration

FRACTIONS = (0.10, 0.50, 0.95)


@cache
def clip() -> bytes:
    # 8 s, 25 fps, 160x96, a keyframe every 2 s: each position is a seek and a decode forward.
    return videos.clip_bytes(8.0, gop=50)


def download(rest: Rest, job: Json, index: int) -> bytes:
    resp = rest.http.get(f"/v1/jobs/{job['job_id']}/outputs/{index}")
    assert resp.status_code == 200, resp.text
    return resp.content


def run_job(rest: Rest, image_id: str, operations: list[Json]) -> Json:
    job = rest.create_job(image_id, operations, uuid.uuid4().hex)
    done = rest.wait_job(job["job_id"], timeout=30)
    assert done["state"] == "SUCCEEDED", done
    return done


def test_an_mp4_upload_is_a_video(rest: Rest) -> None:
    image = rest.upload(clip(), "application/octet-stream")  # the label is never trusted
    assert image["kind"] == "VIDEO"
    assert (image["width"], image["height"], image["frame_count"]) == (160, 96, 200)
    assert image["content_type"] == "video/mp4"
    video = image["video"]
    assert video["container"] == "MP4"
    assert video["codec"] == "h264"
    assert video["fps"] == pytest.approx(25.0)
    assert video["duration_s"] == pytest.approx(8.0, abs=0.05)


def test_poster_frames_at_10_50_95_percent(rest: Rest) -> None:
    image = rest.upload(clip())
    ops: list[Json] = [
        {"video_frames": {}},
        {"resize": {"width": 120}},
        {"convert": {"format": "PNG"}},
    ]
    job = run_job(rest, image["image_id"], ops)

    outputs = job["outputs"]
    assert [o["rendition"] for o in outputs] == ["frame-1", "frame-2", "frame-3"]
    assert {(o["width"], o["height"], o["format"]) for o in outputs} == {(120, 72, "PNG")}
    # Which frame each position got, reported by the stage.
    (report,) = job["stages"][0]["reports"]
    frames = report["video_frames"]["frames"]
    reference = videos.decode_all(clip())
    for i, fraction in enumerate(FRACTIONS):
        expected = videos.shown_at(reference, fraction * 8.0)
        assert frames[i]["time_s"] == pytest.approx(reference[expected][0])
        got = np.asarray(Image.open(io.BytesIO(download(rest, job, i))).convert("RGB"))
        # The right frame, not a neighbour: the scene scrolls 3 px a frame.
        errors = {
            k: _difference(got, reference[k][1])
            for k in range(expected - 3, expected + 4)
            if 0 <= k < len(reference)
        }
        assert min(errors, key=errors.__getitem__) == expected, errors
        assert errors[expected] < 6


def _difference(output: np.ndarray, frame: np.ndarray) -> float:
    h, w = output.shape[:2]
    shrunk = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.LANCZOS))
    return float(np.abs(output.astype(int) - shrunk.astype(int)).mean())


def test_best_near_skips_a_black_segment_at_50_percent(rest: Rest) -> None:
    image = rest.upload(videos.clip_bytes(8.0, gop=50, black=[(3.4, 4.7)]))
    exact, best = (
        run_job(
            rest,
            image["image_id"],
            [
                {"video_frames": {"fractions": [0.5], "select": select, "window_s": 1.5}},
                {"convert": {"format": "PNG"}},
            ],
        )
        for select in ("EXACT", "BEST_NEAR")
    )
    assert np.asarray(Image.open(io.BytesIO(download(rest, exact, 0)))).mean() < 10
    assert np.asarray(Image.open(io.BytesIO(download(rest, best, 0)))).mean() > 60
    (chosen,) = best["stages"][0]["reports"][0]["video_frames"]["frames"]
    assert not 3.4 <= chosen["time_s"] < 4.7
    assert abs(chosen["time_s"] - 4.0) <= 1.5
    assert not chosen.get("warnings")


def test_video_preview_is_an_animated_webp_of_the_asked_length(rest: Rest) -> None:
    image = rest.upload(clip())
    ops: list[Json] = [{"video_preview": {"start_s": 2, "duration_s": 2, "fps": 5, "width": 80}}]
    job = run_job(rest, image["image_id"], ops)
    (output,) = job["outputs"]
    assert (output["format"], output["width"], output["height"]) == ("WEBP", 80, 48)
    preview = Image.open(io.BytesIO(download(rest, job, 0)))
    assert preview.n_frames == 10
    shown = 0
    for k in range(preview.n_frames):
        preview.seek(k)
        preview.load()  # Pillow reads a WebP frame's duration when it decodes it
        shown += preview.info["duration"]
    assert shown == 2000


def test_video_operations_need_a_video_and_come_first(rest: Rest, photo_id: str) -> None:
    resp = rest.create_job_response(photo_id, [{"video_frames": {}}])
    assert (resp.status_code, reason(resp)) == (400, "INVALID_OPERATION")
    video_id = rest.upload(clip())["image_id"]
    resp = rest.create_job_response(video_id, [{"resize": {"width": 100}}])
    assert (resp.status_code, reason(resp)) == (400, "INVALID_OPERATION")
    resp = rest.create_job_response(video_id, [{"video_sheet": {}}, {"video_frames": {}}])
    assert (resp.status_code, reason(resp)) == (400, "INVALID_OPERATION")


def test_a_video_operation_out_of_its_rules_is_400_before_a_job(rest: Rest) -> None:
    # The video operation itself was never checked: fractions [1.5] made a job that ran.
    video_id = rest.upload(clip())["image_id"]
    for op in (
        {"video_frames": {"fractions": [1.5]}},
        {"video_frames": {"fractions": [0.5], "timestamps_s": [1]}},
        {"video_preview": {"start_s": -1}},
    ):
        for path in ("/v1/jobs", "/v1/jobs:plan"):
            resp = rest.http.post(path, json={"image_id": video_id, "operations": [op]})
            assert (resp.status_code, reason(resp)) == (400, "INVALID_OPERATION"), resp.text


def test_hostile_video_corpus(rest: Rest, stack: Stack, photo_id: str) -> None:
    imaging_pid = stack.pids()["imaging"]
    mismatches: list[str] = []
    jobs: list[tuple[videos.VideoCase, str]] = []
    operations: list[Json] = [
        {"video_frames": {"select": "BEST_NEAR"}},
        {"resize": {"width": 32}},
    ]
    for case in videos.HOSTILE:
        resp = rest.upload_response(case.make(), "video/mp4")
        if case.stage == videos.UPLOAD:
            got = f"{resp.status_code} {reason(resp) if resp.status_code == 400 else resp.text}"
            if got != f"400 {case.reason}":
                mismatches.append(f"{case.name}: upload gave {got}, expected 400 {case.reason}")
            continue
        if resp.status_code != 200:
            mismatches.append(f"{case.name}: upload gave {resp.status_code} {resp.text}")
            continue
        job = rest.create_job(resp.json()["image"]["image_id"], operations, uuid.uuid4().hex)
        jobs.append((case, job["job_id"]))

    started = time.monotonic()
    for case, job_id in jobs:
        job = rest.wait_job(job_id, timeout=max(5.0, 30 - (time.monotonic() - started)))
        (stage,) = job["stages"]
        if case.stage == videos.JOB:
            got = (job["state"], job.get("error", {}).get("reason"), stage["attempts"])
            if got != ("FAILED", case.reason, 1):  # permanent: never retried
                mismatches.append(f"{case.name}: job ended {got}, expected FAILED {case.reason}")
            continue
        if job["state"] != "SUCCEEDED" or len(job["outputs"]) != 3:
            mismatches.append(f"{case.name}: job ended {job['state']} {job.get('error')}")
            continue
        warned = [bool(f.get("warnings")) for f in stage["reports"][0]["video_frames"]["frames"]]
        if warned != [case.name == "all_black"] * 3:
            mismatches.append(f"{case.name}: warnings {warned}")

    assert not mismatches, "\n".join(mismatches)
    assert stack.pids()["imaging"] == imaging_pid  # the same worker served it all
    job = run_job(rest, photo_id, [{"resize": {"width": 100}}])
    assert job["stages"][0]["attempts"] == 1


def test_video_metadata_is_indexed_and_searchable(rest: Rest) -> None:
    buf = io.BytesIO()
    tags = {"creation_time": "2023-07-14T09:00:00Z", "location": "-21.1151+055.5364/"}
    videos.write_clip(buf, 1.0, container="mov", tags=tags)
    image_id = rest.upload(buf.getvalue())["image_id"]
    deadline = time.monotonic() + 30
    while (resp := rest.http.get(f"/v1/images/{image_id}/metadata")).status_code == 503:
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.1)
    assert resp.status_code == 200, resp.text
    md = resp.json()["metadata"]
    assert md["video"]["info"]["codec"] == "h264"
    assert md["video"]["location"] == "-21.1151+055.5364/"
    assert md["duration_ms"] == 1000
    # Found by place and time, like a photo.
    box = {"min_latitude": -21.2, "max_latitude": -21.0, "min_longitude": 55.5}
    found = rest.http.get(
        "/v1/images:search",
        params={**box, "max_longitude": 55.6, "taken_after": "2023-07-14T00:00:00Z"},
    )
    assert found.status_code == 200, found.text
    assert image_id in {i["image_id"] for i in found.json()["images"]}


def test_videos_upload_by_grpc_stream_and_presigned_url(grpc_target: str, api_key: str) -> None:
    import pixmesh
    from pixmesh.common.v1 import image_pb2

    data = videos.clip_bytes(2.0, container="matroska", size=(96, 64))
    with pixmesh.Client(grpc_target, api_key, timeout=30) as client:
        streamed = client.upload(data, "clip.mkv")
        presigned = client.upload_via_url(data, "clip.mkv")
    for image in (streamed, presigned):
        assert image.kind == image_pb2.Image.VIDEO
        assert image.video.container == image_pb2.VideoInfo.MKV
        assert (image.width, image.height, image.content_type) == (96, 64, "video/x-matroska")
        assert image.video.duration_s == pytest.approx(2.0, abs=0.05)


def test_sdk_and_cli_poster_frames(grpc_target: str, api_key: str, tmp_path: Path) -> None:
    import pixmesh
    from pixmesh import ops

    path = tmp_path / "clip.mp4"
    path.write_bytes(clip())
    with pixmesh.Client(grpc_target, api_key, timeout=30, watch_timeout=60) as client:
        job = client.process(path, [ops.video_frames(select="best_near"), ops.resize(80)])
        assert [o.rendition for o in job.outputs] == ["frame-1", "frame-2", "frame-3"]
        still = Image.open(io.BytesIO(client.download_output(job.job_id, rendition="frame-2")))
        assert (still.format, still.size) == ("JPEG", (80, 48))

    script = Path(sys.executable).with_name("pixmesh")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "pixmesh.cli"]
    out = tmp_path / "out"
    env = {**os.environ, "PIXMESH_TARGET": grpc_target, "PIXMESH_API_KEY": api_key}
    frames = ["--op", "video_frames=select:best_near", "--op", "resize=64x"]
    for ops_args, target in (
        (frames, out / "frames"),
        (["--op", "video_sheet=count:4"], out / "sheet"),
    ):
        result = subprocess.run(
            [*argv, "process", str(path), *ops_args, "-o", str(target)],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    stills = sorted(p.name for p in (out / "frames").iterdir())
    assert len(stills) == 3, stills
    assert {Image.open(out / "frames" / n).size for n in stills} == {(64, 38)}
    (written,) = (out / "sheet").iterdir()
    sheet = Image.open(written)
    assert (sheet.format, sheet.size) == ("JPEG", (640, 384))  # 2x2 tiles of 320x192


@pytest.fixture
def poster_preset(stack: Stack) -> Iterator[None]:
    presets = {"poster": [{"video_frames": {}}, {"resize": {"width": 64}}]}
    stack.restart_service("gateway", {"PIXMESH_PRESETS": json.dumps(presets)})
    try:
        yield
    finally:
        stack.restart_service("gateway")


def test_an_upload_rule_makes_poster_frames_without_create_job(
    rest: Rest, poster_preset: None, grpc_target: str, api_key: str
) -> None:
    resp = rest.http.put("/v1/uploadRules/VIDEO", json={"preset": "poster"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["rule"]["preset"] == "poster"
    # A preset that cannot run on the kind is refused when the rule is set.
    bad = rest.http.put("/v1/uploadRules/IMAGE", json={"preset": "poster"})
    assert (bad.status_code, reason(bad)) == (400, "INVALID_OPERATION")
    unknown = rest.http.put("/v1/uploadRules/IMAGE", json={"preset": "nope"})
    assert (unknown.status_code, reason(unknown)) == (400, "UNKNOWN_PRESET")
    assert [r["kind"] for r in rest.http.get("/v1/uploadRules").json()["rules"]] == ["VIDEO"]

    image = rest.upload(videos.clip_bytes(3.0, size=(128, 72)))
    deadline = time.monotonic() + 30
    while True:
        jobs = [
            j for j in rest.list_page(page_size=50)["jobs"] if j["image_id"] == image["image_id"]
        ]
        if jobs and jobs[0]["state"] == "SUCCEEDED":
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.2)
    (job,) = jobs
    assert [o["rendition"] for o in job["outputs"]] == ["frame-1", "frame-2", "frame-3"]
    assert {(o["width"], o["height"]) for o in job["outputs"]} == {(64, 36)}
    # The same bytes again: the same image, and no second job.
    assert rest.upload(videos.clip_bytes(3.0, size=(128, 72)))["image_id"] == image["image_id"]
    again = [j for j in rest.list_page(page_size=50)["jobs"] if j["image_id"] == image["image_id"]]
    assert [j["job_id"] for j in again] == [job["job_id"]]

    # The CLI manages the same rules.
    env = {**os.environ, "PIXMESH_TARGET": grpc_target, "PIXMESH_API_KEY": api_key}
    listed = _cli(["upload-rules", "list"], env)
    assert listed.stdout.split() == ["video", "poster"]
    _cli(["upload-rules", "delete", "video"], env)
    assert rest.http.get("/v1/uploadRules").json()["rules"] == []
    gone = rest.http.delete("/v1/uploadRules/VIDEO")  # idempotent
    assert (gone.status_code, gone.json().get("deleted", False)) == (200, False)
    _cli(["upload-rules", "set", "video", "poster"], env)
    assert [r["preset"] for r in rest.http.get("/v1/uploadRules").json()["rules"]] == ["poster"]
    rest.http.delete("/v1/uploadRules/VIDEO")


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("pixmesh")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "pixmesh.cli"]
    result = subprocess.run(
        [*argv, *args], env=env, capture_output=True, text=True, timeout=90, check=False
    )
    assert result.returncode == 0, result.stderr
    return result


def test_a_batch_of_videos_keeps_every_poster_frame(rest: Rest, photo_id: str) -> None:
    # A batch's jobs did not get a video_frames job's frame-<n> outputs (CreateJob expands
    # them): the worker made three frames and the job recorded one output.
    video_id = rest.upload(clip())["image_id"]
    resp = rest.http.post(
        "/v1/batches",
        json={
            "source": {"images": {"image_ids": [video_id]}},
            "operations": [{"video_frames": {}}],
        },
    )
    assert resp.status_code == 200, resp.text
    batch_id = resp.json()["batch"]["batch_id"]
    deadline = time.monotonic() + 60
    while (batch := rest.http.get(f"/v1/batches/{batch_id}").json()["batch"])["state"] in (
        "PENDING",
        "RUNNING",
    ):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
    assert batch["state"] == "SUCCEEDED", batch
    [item] = rest.http.get(f"/v1/batches/{batch_id}/jobs").json()["items"]
    job = rest.get_job(item["job_id"])
    assert [o["rendition"] for o in job["outputs"]] == ["frame-1", "frame-2", "frame-3"]
    # A video among images, or a video operation on images: refused before the batch exists.
    for ids, op in (([video_id], {"grayscale": {}}), ([photo_id], {"video_frames": {}})):
        resp = rest.http.post(
            "/v1/batches", json={"source": {"images": {"image_ids": ids}}, "operations": [op]}
        )
        assert (resp.status_code, reason(resp)) == (400, "INVALID_OPERATION"), resp.text


def test_a_video_has_no_preview_and_says_so(rest: Rest) -> None:
    # GetImagePreview on a video was "the image cannot be decoded" (IMAGE_CORRUPT) after the
    # metadata service had read the whole video (up to 1 GiB) into memory to try.
    video_id = rest.upload(clip())["image_id"]
    resp = rest.http.get(f"/v1/images/{video_id}/preview")
    assert (resp.status_code, reason(resp)) == (400, "UNSUPPORTED_OPERATION"), resp.text
    assert "video_frames" in resp.json()["message"]
    # Nor a perceptual hash: said so, not "its pixels could not be decoded".
    resp = rest.http.get(f"/v1/images/{video_id}:similar")
    assert (resp.status_code, reason(resp)) == (400, "NO_PERCEPTUAL_HASH"), resp.text
    assert "video" in resp.json()["message"]
