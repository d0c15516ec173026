"""`pixmesh batch`'s progress bar: redrawn on a terminal, built once at the end elsewhere."""

from __future__ import annotations

import time

import pytest
from rich.progress import Progress

from pixmesh._batch_cli import _bar


def _renders(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    original = Progress.get_renderables

    def counted(self: Progress):  # type: ignore[no-untyped-def]
        calls.append(time.monotonic())
        return original(self)

    monkeypatch.setattr(Progress, "get_renderables", counted)
    return calls


def test_off_a_terminal_the_bar_is_built_only_for_its_final_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    renders = _renders(monkeypatch)
    with _bar() as bar:
        task = bar.add_task("images", total=3, rate="0.0", failed=0)
        before = len(renders)
        for done in range(1, 4):
            bar.update(task, completed=done, rate="1.5", failed=0)
            time.sleep(0.15)  # 0.45 s: four or five redraws at ten a second
        assert len(renders) == before  # none while it runs
    err = capsys.readouterr().err
    assert "3/3" in err and "1.5 MB/s" in err  # the final line is still printed


def test_on_a_terminal_it_is_redrawn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    renders = _renders(monkeypatch)
    with _bar() as bar:
        assert bar.console.is_terminal
        bar.add_task("images", total=3, rate="0.0", failed=0)
        before = len(renders)
        time.sleep(1.0)  # ten redraws; three leave room for a loaded machine
        assert len(renders) >= before + 3
