from __future__ import annotations

from pathlib import Path

import pytest

from pixmesh.common.v1.operations_pb2 import Denoise
from services.inference import selection
from services.inference.repository import ModelConfig
from services.runtime.errors import FailedPrecondition, InvalidArgument


def config(name: str, depth: int, trained: float | None, band: tuple[float, float]) -> ModelConfig:
    return ModelConfig(
        name=name,
        version="1",
        path=Path("/nowhere"),
        file="model.onnx",
        sha256="",
        description="",
        depth=depth,
        receptive_radius=depth,
        sigma_input=trained is None,
        trained_sigma=trained,
        sigma_range=band,
        inputs=(),
        outputs=(),
    )


N6 = config("dncnn6-n", 6, None, (0, 30))
H6 = config("dncnn6-h", 6, 51.0, (30, 255))
L6 = config("dncnn6-l", 6, 15.3, (0, 0))
M17 = config("dncnn17-m", 17, 25.5, (20, 36))
ALL = [N6, H6, L6, M17]


@pytest.mark.parametrize(
    ("estimate", "depth", "model", "scale"),
    [
        (10.0, 6, "dncnn6-n", 1.0),
        (29.9, 6, "dncnn6-n", 1.0),
        (40.0, 6, "dncnn6-h", 51 / 40),
        (25.0, 17, "dncnn17-m", 25.5 / 25),
        (5.0, 17, "dncnn17-m", 25.5 / 5),  # outside every 17 band: the nearest trained level
    ],
)
def test_auto_picks_by_band_within_the_default_depth(
    estimate: float, depth: int, model: str, scale: float
) -> None:
    choice = selection.choose(Denoise(auto=True), estimate, ALL, depth)
    assert choice.config.name == model
    assert choice.sigma == estimate
    assert choice.scale == pytest.approx(min(scale, selection.MAX_SCALE))


def test_a_sigma_input_model_gets_sigma_capped_at_its_training_range() -> None:
    choice = selection.choose(Denoise(sigma=80), 3.0, ALL, 6, named=N6)
    assert (choice.sigma, choice.model_sigma, choice.scale) == (80, 51, 1.0)


def test_a_named_blind_model_runs_as_is_without_a_sigma() -> None:
    choice = selection.choose(Denoise(model="dncnn6-l"), 22.0, ALL, 6, named=L6)
    assert (choice.config.name, choice.scale) == ("dncnn6-l", 1.0)
    scaled = selection.choose(Denoise(model="dncnn6-l", sigma=30), 22.0, ALL, 6, named=L6)
    assert scaled.scale == pytest.approx(15.3 / 30)


def test_falls_back_to_the_other_depth_and_fails_without_models() -> None:
    assert selection.choose(Denoise(), 12.0, [M17], 6).config.name == "dncnn17-m"
    with pytest.raises(FailedPrecondition):
        selection.choose(Denoise(), 12.0, [], 6)


def test_validate() -> None:
    selection.validate(Denoise(sigma=255))
    for bad in (Denoise(auto=True, sigma=3), Denoise(sigma=-1), Denoise(sigma=256)):
        with pytest.raises(InvalidArgument):
            selection.validate(bad)


def test_an_int8_copy_gets_sigma_times_its_gain_and_reports_sigma() -> None:
    """`sigma_gain` (an int8 copy's calibration, written by services.inference.quantize) scales
    what the σ-input model is fed, not the σ the report gives; the cap still holds."""
    from dataclasses import replace

    n6q = replace(N6, name="dncnn6-n-int8", precision="int8", sigma_gain=1.1)
    choice = selection.choose(Denoise(auto=True), 20.0, [N6, n6q], 6, precision="int8")
    assert choice.config.name == "dncnn6-n-int8"
    assert (choice.sigma, choice.model_sigma) == (20.0, pytest.approx(22.0))
    named = selection.choose(Denoise(model="dncnn6-n-int8", sigma=50), 0.0, [n6q], 6, n6q)
    assert named.model_sigma == selection.SIGMA_INPUT_MAX
    assert selection.choose(Denoise(auto=True), 20.0, [N6], 6).model_sigma == 20.0


def test_a_plane_kind_with_its_own_sigma_gain_gets_it() -> None:
    """`plane_sigma_gains` (config.json) overrides `sigma_gain` for the planes it names; other
    planes, and callers that name no plane, keep `sigma_gain`."""
    from dataclasses import replace

    n6q = replace(
        N6, name="dncnn6-n-int8", precision="int8", sigma_gain=1.1, plane_sigma_gains=(("Y", 1.05),)
    )
    chosen = {
        plane: selection.choose(Denoise(auto=True), 20.0, [n6q], 6, precision="int8", plane=plane)
        for plane in ("Y", "C1", "")
    }
    assert {p: c.sigma for p, c in chosen.items()} == {"Y": 20.0, "C1": 20.0, "": 20.0}
    assert chosen["Y"].model_sigma == pytest.approx(21.0)
    assert chosen["C1"].model_sigma == chosen[""].model_sigma == pytest.approx(22.0)
    named = selection.choose(Denoise(model="dncnn6-n-int8"), 20.0, [n6q], 6, n6q, plane="Y")
    assert named.model_sigma == pytest.approx(21.0)
