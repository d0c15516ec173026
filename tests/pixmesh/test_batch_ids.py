"""`pixmesh batch --ids FILE|- --id ID`: how the list of image ids is read."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pixmesh._batch_cli import image_ids


def test_a_file_then_the_given_ids_in_order_each_once(tmp_path: Path) -> None:
    listing = tmp_path / "ids.txt"
    listing.write_text("# exported 2026-12-06\nimg_b\n\n  img_a  # trailing comment\nimg_b\n")
    assert image_ids(str(listing), ["img_c", "img_a"]) == ["img_b", "img_a", "img_c"]


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("img_1\nimg_2\n"))
    assert image_ids("-", []) == ["img_1", "img_2"]


def test_no_ids_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "ids.txt"
    listing.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match="no image ids"):
        image_ids(str(listing), [])
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(ValueError, match="stdin"):
        image_ids("-", [])
