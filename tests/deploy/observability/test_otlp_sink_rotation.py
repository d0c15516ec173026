"""The OTLP sink's file is rotated (issue 16): its disk use levels off at (keep + 1) files of
about max_bytes, the newest spans are in the file readers read, and `show` reads the kept ones."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import grpc
import pytest

from deploy.observability import otlp_sink
from deploy.observability.otlp_sink import TraceSink, read_spans, rotated
from tests.deploy.observability.test_otlp_sink import _request, _span


def _export(sink: TraceSink, n: int) -> None:
    span = _span(f"{n:016x}", "", f"span-{n}", 1_000 + n, 2_000 + n)
    sink.Export(_request("svc", span), cast(grpc.ServicerContext, None))


def test_the_file_is_rotated_and_only_keep_files_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    sink = TraceSink(path, max_bytes=2_000, keep=2)
    try:
        for n in range(100):
            _export(sink, n)
    finally:
        sink.close()
    files = rotated(path, keep=2)
    assert files == [path.with_name("traces.jsonl.2"), path.with_name("traces.jsonl.1"), path]
    assert not path.with_name("traces.jsonl.3").exists()
    # No file is much past the limit (a request's spans are not split).
    assert all(f.stat().st_size <= 2_000 for f in files)
    names = [r["name"] for f in files for r in read_spans(f)]
    # The newest spans, in order, none twice; the oldest went with the deleted file.
    assert names == [f"span-{n}" for n in range(100 - len(names), 100)]
    assert "span-99" in [r["name"] for r in read_spans(path)]


def test_show_reads_the_rotated_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "traces.jsonl"
    sink = TraceSink(path, max_bytes=600, keep=1)
    try:
        for n in range(3):
            _export(sink, n)
    finally:
        sink.close()
    assert path.with_name("traces.jsonl.1").exists()
    assert otlp_sink.main(["show", "--file", str(path), "--limit", "0"]) == 0
    out = capsys.readouterr().out
    assert "span-1" in out and "span-2" in out


def test_a_restarted_sink_counts_what_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text("x" * 1_500 + "\n")
    sink = TraceSink(path, max_bytes=2_000, keep=1)
    try:
        _export(sink, 1)
        _export(sink, 2)
    finally:
        sink.close()
    assert path.with_name("traces.jsonl.1").exists()
