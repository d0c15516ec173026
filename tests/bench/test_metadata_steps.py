from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import metadata_steps
from tests.services.metadata.images import scene


def test_steps_are_timed_per_suffix_and_add_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scene(1, (640, 480)).save(tmp_path / "a.jpg", "JPEG", quality=90)
    scene(2, (300, 200)).save(tmp_path / "b.png", "PNG")

    metadata_steps.main(["--folder", str(tmp_path), "--rounds", "2"])

    out = capsys.readouterr().out
    rows = {m[1]: m for m in re.finditer(r"^(jpg|png) \((\d+)\): ([\d.]+) ms = (.*)$", out, re.M)}
    assert set(rows) == {"jpg", "png"}
    for row in rows.values():
        assert row[2] == "1"  # one file of each kind, over two rounds
        parts = dict(part.rsplit(" ", 1) for part in row[4].split(", "))
        assert list(parts) == [
            "sha256", "open", "decode", "upright", "thumbnail", "colours", "placeholders",
            "phash", "dhash",
        ]  # fmt: skip
        # The total is the sum of the steps (each printed to 0.01 ms, the total to 0.1).
        assert abs(sum(float(v) for v in parts.values()) - float(row[3])) <= 0.1
    assert "png decode, Pillow load:" in out
    assert "png decode, zlib inflate of IDAT:" in out
