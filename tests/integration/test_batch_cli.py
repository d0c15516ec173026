"""`pixmesh batch DIR -o DEST` against the real stack (issue 12): broken files listed with their
reason and exit status 1; a run killed mid-way and run again does only the rest."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.rest import Rest

pytestmark = pytest.mark.integration


def _photo(path: Path, seed: int, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.linear_gradient("L").resize((240 + seed, 180)).convert("RGB")
    img.putpixel((0, 0), (seed % 256, 3, 7))
    out = io.BytesIO()
    img.save(out, fmt)
    path.write_bytes(out.getvalue())


def _argv(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("pixmesh")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "pixmesh.cli"]
    return [*base, *args]


def _env(grpc_target: str, api_key: str) -> dict[str, str]:
    return {**os.environ, "PIXMESH_TARGET": grpc_target, "PIXMESH_API_KEY": api_key}


OPS = ["--op", "resize=64x", "--op", "convert=webp:80"]


def test_a_folder_with_broken_files(grpc_target: str, api_key: str, tmp_path: Path) -> None:
    src, dest = tmp_path / "photos", tmp_path / "out"
    names = ["a.jpg", "b.jpg", "trip/c.jpg", "trip/day2/d.jpg", "e.png"]
    for i, name in enumerate(names):
        _photo(src / name, i, "PNG" if name.endswith(".png") else "JPEG")
    # A PNG named .jpg: taken by its content.
    _photo(src / "misnamed.jpg", 9, "PNG")
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.txt").write_text("not an image\n")
    (src / "truncated.jpg").write_bytes((src / "a.jpg").read_bytes()[:300])
    result = subprocess.run(
        _argv("batch", str(src), "-o", str(dest), *OPS, "--json"),
        env=_env(grpc_target, api_key),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["images"] == 9
    assert summary["succeeded"] == 6
    assert summary["failed"] == 3
    reasons = {f["name"]: f["reason"] for f in summary["failures"]}
    assert reasons["empty.jpg"] == "EMPTY_IMAGE"
    assert reasons["notes.txt"] == "UNSUPPORTED_FORMAT"
    assert reasons["truncated.jpg"]  # refused at upload or failed in imaging, with a reason
    assert set(reasons) == {"empty.jpg", "notes.txt", "truncated.jpg"}
    assert summary["bytes_out"] > 0 and summary["compression_ratio"] > 0
    for name in [*names, "misnamed.jpg"]:
        out = dest / (os.path.splitext(name)[0] + ".webp")
        with Image.open(out) as img:
            assert (img.format, img.width) == ("WEBP", 64)
    # Every failure is printed with its reason too.
    assert json.loads(result.stdout)["failed"] == 3


def test_resume_after_a_kill_does_only_the_rest(
    grpc_target: str, api_key: str, tmp_path: Path
) -> None:
    src, dest = tmp_path / "photos", tmp_path / "out"
    for i in range(24):
        _photo(src / f"p{i:02d}.jpg", 20 + i)
    journal = dest / ".pixmesh-batch.jsonl"
    env = _env(grpc_target, api_key)
    argv = _argv("batch", str(src), "-o", str(dest), *OPS, "--chunk", "4", "--concurrency", "2")
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (journal.exists() and len(journal.read_text().splitlines()) >= 4):
        assert first.poll() is None, "the first run ended before it could be killed"
        assert time.monotonic() < deadline, "no image finished within 60 s"
        time.sleep(0.05)
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


def test_a_list_of_image_ids(rest: Rest, grpc_target: str, api_key: str, tmp_path: Path) -> None:
    ids = []
    for seed in range(3):
        _photo(tmp_path / f"{seed}.jpg", 20 + seed)
        ids.append(rest.upload((tmp_path / f"{seed}.jpg").read_bytes())["image_id"])
    listing = tmp_path / "ids.txt"
    listing.write_text(f"# uploaded earlier\n{ids[0]}\n\n{ids[1]}  # the second\n{ids[0]}\n")
    dest = tmp_path / "out"
    result = subprocess.run(
        _argv("batch", "--ids", str(listing), "--id", ids[2], "-o", str(dest), *OPS, "--json"),
        env=_env(grpc_target, api_key),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((dest / "summary.json").read_text())
    # Proto JSON: 64-bit counts are strings, zero ones (failed) left out.
    counts = [int(summary.get(k, 0)) for k in ("images", "succeeded", "failed")]
    assert counts == [3, 3, 0]
    outputs = sorted(p for p in dest.rglob("*.webp"))
    assert len(outputs) == 3
    for out in outputs:
        with Image.open(out) as img:
            assert (img.format, img.width) == ("WEBP", 64)
