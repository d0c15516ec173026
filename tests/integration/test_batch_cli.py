"""`pixmesh batch DIR -o DEST` against the real stack (issue 12): broken files listed with their
reason and exit status 1; a run killed mid-way and run again does only the rest."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import asyncpg
import httpx
import pytest
from PIL import Image

from deploy.local import Stack
from tests.integration.rest import Rest
from tests.integration.test_metrics import scrape

pytestmark = pytest.mark.integration


def _photo(path: Path, seed: int, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.linear_gradient("L").resize((240 + seed, 180)).convert("RGB")
    img.putpixel((0, 0), (seed % 256, 3, 7))
    out = io.BytesIO()
    img.save(out, fmt)
    path.write_bytes(out.getvalue())


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with(width: int, height: int, idat: bytes) -> bytes:
    """A PNG of these dimensions (RGB, 8 bits) whose pixel data is `idat`, as given: a valid
    header over random data is a corrupt image; a huge header over a little data, one over the
    pixel limit that is small on disk."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _argv(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("pixmesh")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "pixmesh.cli"]
    return [*base, *args]


def _env(grpc_target: str, api_key: str) -> dict[str, str]:
    return {**os.environ, "PIXMESH_TARGET": grpc_target, "PIXMESH_API_KEY": api_key}


OPS = ["--op", "resize=64x", "--op", "convert=webp:80"]


def test_a_folder_with_broken_files(
    rest: Rest, grpc_target: str, api_key: str, tmp_path: Path
) -> None:
    src, dest = tmp_path / "photos", tmp_path / "out"
    names = ["a.jpg", "b.jpg", "trip/c.jpg", "trip/day2/d.jpg", "e.png"]
    for i, name in enumerate(names):
        _photo(src / name, i, "PNG" if name.endswith(".png") else "JPEG")
    # A PNG named .jpg: taken by its content.
    _photo(src / "misnamed.jpg", 9, "PNG")
    # The same bytes twice: one image for the server, two files with their own outputs.
    (src / "copies").mkdir()
    (src / "copies" / "a.jpg").write_bytes((src / "a.jpg").read_bytes())
    # Two names that differ only by their extension: each output keeps it.
    _photo(src / "same" / "x.jpg", 11, "JPEG")
    _photo(src / "same" / "x.png", 12, "PNG")
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.txt").write_text("not an image\n")
    (src / "truncated.jpg").write_bytes((src / "a.jpg").read_bytes()[:300])
    # A header that reads, pixel data that does not.
    (src / "corrupt.png").write_bytes(png_with(64, 48, random.Random(7).randbytes(600)))
    # Over the limits: 400 megapixels in a few bytes; more bytes than the client takes.
    (src / "huge.png").write_bytes(png_with(20_000, 20_000, zlib.compress(b"\x00" * 64)))
    with (src / "big.jpg").open("wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(50 * 1024 * 1024 + 1)
    result = subprocess.run(
        _argv("batch", str(src), "-o", str(dest), *OPS, "--json"),
        env=_env(grpc_target, api_key),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["images"] == 15
    assert summary["succeeded"] == 9
    assert summary["failed"] == 6
    reasons = {f["name"]: g["reason"] for g in summary["failures"] for f in g["failures"]}
    assert reasons["empty.jpg"] == "EMPTY_IMAGE"
    assert reasons["notes.txt"] == "UNSUPPORTED_FORMAT"
    assert reasons["big.jpg"] == "IMAGE_TOO_LARGE"
    assert reasons["huge.png"] == "TOO_MANY_PIXELS"  # refused at upload, by its header
    assert reasons["corrupt.png"] == "IMAGE_CORRUPT"  # failed in imaging, its job named
    # Refused at upload or failed in imaging, with a reason.
    assert reasons["truncated.jpg"] == "IMAGE_CORRUPT"
    assert set(reasons) == {
        "empty.jpg",
        "notes.txt",
        "truncated.jpg",
        "corrupt.png",
        "huge.png",
        "big.jpg",
    }
    assert summary["bytes_out"] > 0 and 0 < summary["compression_ratio"] < 1
    assert summary["bytes_saved"] > 0 and summary["space_saving_percent"] > 0
    assert summary["error_rate_percent"] == pytest.approx(100 * 6 / 15)
    assert summary["p95_seconds"] >= summary["p50_seconds"] > 0
    assert summary["source"] == str(src) and summary["interrupted"] is False

    # One format: the server's summary.json of the batch the run made has the same keys, and
    # the figures of the images that reached it agree with the folder's.
    [batch_id] = summary["batch_ids"]
    resp = rest.http.get(f"/v1/batches/{batch_id}/summary.json")
    assert resp.status_code == 200, resp.text
    server = resp.json()
    assert set(server) == set(summary)
    assert server["batch_ids"] == [batch_id]
    assert server["succeeded"] == summary["succeeded"]
    # What the server saw: the images uploaded (the rest were refused before a job).
    server_reasons = {f["name"]: g["reason"] for g in server["failures"] for f in g["failures"]}
    assert server["failed"] == len(server_reasons)
    assert set(server_reasons) <= {"corrupt.png", "truncated.jpg"}
    for name, reason in server_reasons.items():
        assert reasons[name] == reason
    for key in ("bytes_in", "bytes_out", "bytes_saved"):
        assert server[key] == summary[key], key
    assert server["compression_ratio"] == summary["compression_ratio"]
    for name in [*names, "misnamed.jpg", "copies/a.jpg"]:
        out = dest / (os.path.splitext(name)[0] + ".webp")
        with Image.open(out) as img:
            assert (img.format, img.width) == ("WEBP", 64)
    for name in ("same/x.jpg.webp", "same/x.png.webp"):
        with Image.open(dest / name) as img:
            assert (img.format, img.width) == ("WEBP", 64)
    assert not (dest / "same" / "x.webp").exists()
    # --json prints the same document.
    assert json.loads(result.stdout)["failures"] == summary["failures"]


def test_resume_after_a_kill_does_only_the_rest(
    grpc_target: str, api_key: str, tmp_path: Path
) -> None:
    src, dest = tmp_path / "photos", tmp_path / "out"
    for i in range(24):
        _photo(src / f"p{i:02d}.jpg", 20 + i)
    journal = dest / ".pixmesh-batch.jsonl"
    env = _env(grpc_target, api_key)
    argv = _argv("batch", str(src), "-o", str(dest), *OPS, "--chunk", "4", "--concurrency", "2")
    first = _start_until_journaled(argv, env, journal, subprocess.DEVNULL)
    first.send_signal(signal.SIGKILL)  # a crash: no summary, no cleanup
    first.wait(timeout=10)
    done_before = len({json.loads(line)["sha256"] for line in journal.read_text().splitlines()})
    assert 4 <= done_before < 24

    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["skipped"] == done_before
    assert summary["succeeded"] == 24 - done_before
    assert summary["failed"] == 0
    assert sorted(p.name for p in dest.glob("*.webp")) == [f"p{i:02d}.webp" for i in range(24)]


def test_ctrl_c_finishes_the_images_in_flight_and_writes_the_summary(
    grpc_target: str, api_key: str, tmp_path: Path
) -> None:
    src, dest = tmp_path / "photos", tmp_path / "out"
    total = 32
    for i in range(total):
        _photo(src / f"p{i:02d}.jpg", 60 + i)
    journal = dest / ".pixmesh-batch.jsonl"
    env = _env(grpc_target, api_key)
    argv = _argv("batch", str(src), "-o", str(dest), *OPS, "--chunk", "4", "--concurrency", "2")
    first = _start_until_journaled(argv, env, journal, subprocess.PIPE)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["interrupted"] is True
    # No file taken after the Ctrl-C (at most a few chunks were in flight) ...
    assert summary["images"] < total
    # ... and every file taken was finished: its output written and recorded for a re-run.
    assert summary["failed"] == 0
    assert summary["succeeded"] == summary["images"]
    recorded = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(recorded) == summary["succeeded"]
    for entry in recorded:
        assert all((dest / name).exists() for name in entry["outputs"])

    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    again = json.loads((dest / "summary.json").read_text())
    assert (again["skipped"], again["succeeded"]) == (len(recorded), total - len(recorded))
    assert again["interrupted"] is False
    assert len(list(dest.glob("*.webp"))) == total


def _get_jobs(stack: Stack) -> float:
    """GetJob calls the gateway has answered."""
    return scrape(stack, "gateway").sum("pixmesh_grpc_server_handled_total", grpc_method="GetJob")


def test_a_list_of_image_ids(
    rest: Rest, stack: Stack, grpc_target: str, api_key: str, tmp_path: Path
) -> None:
    ids = []
    for seed in range(3):
        _photo(tmp_path / f"{seed}.jpg", 20 + seed)
        ids.append(rest.upload((tmp_path / f"{seed}.jpg").read_bytes())["image_id"])
    listing = tmp_path / "ids.txt"
    listing.write_text(f"# uploaded earlier\n{ids[0]}\n\n{ids[1]}  # the second\n{ids[0]}\n")
    dest = tmp_path / "out"
    get_jobs = _get_jobs(stack)
    result = subprocess.run(
        _argv("batch", "--ids", str(listing), "--id", ids[2], "-o", str(dest), *OPS, "--json"),
        env=_env(grpc_target, api_key),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((dest / "summary.json").read_text())
    # The summary.json format (pixmesh.summaries): counts as numbers, zeros present.
    assert [summary[k] for k in ("images", "succeeded", "failed")] == [3, 3, 0]
    assert summary["source"] == "images"
    outputs = sorted(p for p in dest.rglob("*.webp"))
    assert len(outputs) == 3
    # The outputs came with the batch's listed items: no GetJob per image.
    assert _get_jobs(stack) == get_jobs
    for out in outputs:
        with Image.open(out) as img:
            assert (img.format, img.width) == ("WEBP", 64)


def _start_until_journaled(
    argv: list[str], env: dict[str, str], journal: Path, stdout: int
) -> subprocess.Popen[bytes]:
    """Start a batch run and return it once its journal lists 4 finished images."""
    run = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (journal.exists() and len(journal.read_text().splitlines()) >= 4):
        assert run.poll() is None, "the first run ended before it could be stopped"
        assert time.monotonic() < deadline, "no image finished within 60 s"
        time.sleep(0.05)
    return run


def test_a_pipeline_the_server_refuses_uploads_no_file(
    grpc_target: str, api_key: str, database_url: str, tmp_path: Path
) -> None:
    """A width over the deployment's max_output_dimension: the run ends with the server's
    refusal before any file of the folder is uploaded (it used to upload them all first)."""
    src, dest = tmp_path / "photos", tmp_path / "out"
    src.mkdir()
    for i in range(3):  # bytes no other test uploads
        Image.frombytes("RGB", (16, 16), os.urandom(16 * 16 * 3)).save(src / f"{i}.png")
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(src.iterdir())]
    result = subprocess.run(
        _argv("batch", str(src), "-o", str(dest), "--op", "resize=100000x"),
        env=_env(grpc_target, api_key),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "operations[0].resize.width" in result.stderr

    async def stored() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM gateway.images WHERE sha256 = ANY($1::text[])", shas
            )
            return count
        finally:
            await conn.close()

    assert asyncio.run(stored()) == 0


def _gateway_calls(stack: Stack, method: str) -> float:
    """Calls of `method` the gateway has answered."""
    return scrape(stack, "gateway").sum("pixmesh_grpc_server_handled_total", grpc_method=method)


def test_outputs_come_straight_from_object_storage(
    rest: Rest, stack: Stack, grpc_target: str, api_key: str, tmp_path: Path
) -> None:
    """The listing carries a presigned GET URL of each output and the CLI downloads from it:
    no DownloadOutput through the gateway, the same outputs and byte counts as before."""
    src, dest = tmp_path / "photos", tmp_path / "out"
    for i in range(6):
        _photo(src / f"p{i}.jpg", 120 + i)
    downloads = _gateway_calls(stack, "DownloadOutput")
    result = subprocess.run(
        _argv("batch", str(src), "-o", str(dest), *OPS, "--chunk", "3", "--json"),
        env=_env(grpc_target, api_key),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert _gateway_calls(stack, "DownloadOutput") == downloads
    assert "through the gateway" not in result.stderr
    summary = json.loads((dest / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (6, 0)
    written = {p.name: p.read_bytes() for p in dest.glob("*.webp")}
    assert sorted(written) == [f"p{i}.webp" for i in range(6)]
    assert summary["bytes_out"] == sum(len(data) for data in written.values())
    assert not list(dest.rglob("*.part"))
    # The same listing over REST: every output has a URL any HTTP client can fetch, no API key.
    for batch_id in summary["batch_ids"]:
        resp = rest.http.get(f"/v1/batches/{batch_id}/jobs", params={"output_urls": "true"})
        assert resp.status_code == 200, resp.text
        for item in resp.json()["items"]:
            [output] = item["outputs"]
            body = httpx.get(output["download_url"], timeout=10).content
            assert hashlib.sha256(body).hexdigest() == output["sha256"]
            assert body == written[os.path.splitext(item["name"])[0] + ".webp"]
        # Without asking, none.
        plain = rest.http.get(f"/v1/batches/{batch_id}/jobs").json()["items"]
        assert not any(o.get("download_url") for item in plain for o in item["outputs"])


def test_storage_out_of_reach_falls_back_to_the_gateway(
    stack: Stack, grpc_target: str, api_key: str, tmp_path: Path
) -> None:
    """Object storage cannot be reached from the client (here: its HTTP goes through a proxy
    that refuses connections; gRPC does not): the first output that fails is downloaded through
    the gateway, and so is every later one, said once on stderr; no image fails for it."""
    src, dest = tmp_path / "photos", tmp_path / "out"
    for i in range(5):
        _photo(src / f"p{i}.jpg", 140 + i)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    proxy = f"http://127.0.0.1:{closed}"
    env = _env(grpc_target, api_key)
    env.update(http_proxy=proxy, HTTP_PROXY=proxy, no_proxy="", NO_PROXY="")
    env["no_grpc_proxy"] = "127.0.0.1,localhost"
    downloads = _gateway_calls(stack, "DownloadOutput")
    result = subprocess.run(
        _argv("batch", str(src), "-o", str(dest), *OPS, "--chunk", "5", "--json"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((dest / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (5, 0)
    assert _gateway_calls(stack, "DownloadOutput") - downloads == 5
    assert result.stderr.count("downloaded through the gateway for the rest of the run") == 1
    written = sorted(dest.glob("*.webp"))
    assert [p.name for p in written] == [f"p{i}.webp" for i in range(5)]
    assert summary["bytes_out"] == sum(p.stat().st_size for p in written)
    for out in written:
        with Image.open(out) as img:
            assert (img.format, img.width) == ("WEBP", 64)
